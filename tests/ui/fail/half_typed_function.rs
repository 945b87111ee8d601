use idem::idempotent;

// A function still being typed keeps the parser's own error, pointing into it.
#[idempotent(post)]
async fn create_charge(amount: ) -> String {
    String::new()
}

fn main() {}
