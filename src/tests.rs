use pgrx::prelude::*;

#[pg_test]
fn publish_records_event() {
    let id = Spi::get_one::<String>("SELECT webhooks.webhook_publish('user.created', '{\"a\":1}')")
        .unwrap()
        .unwrap();
    assert!(id.starts_with("evt_"));
}
