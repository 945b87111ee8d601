use idem::idempotent;

struct Charges;

impl Charges {
    #[idempotent]
    async fn create(&self) -> &'static str {
        "created"
    }
}

fn main() {}
