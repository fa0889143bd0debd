-- Tombstones: the key and version at which a row left the lake. A delete removes the older
-- versions of the row and stays here, so an older upsert replayed later (a dead letter, a re-run)
-- cannot bring the row back; a newer version of the row (it came back to the lake) still wins.
CREATE TABLE IF NOT EXISTS transactions_tombstones (
    transaction_id text PRIMARY KEY,
    _version       timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions_tombstones (
    transaction_id text NOT NULL,
    model_version  text NOT NULL,
    _version       timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, model_version)
);
CREATE TABLE IF NOT EXISTS daily_account_activity_tombstones (
    account_id    text NOT NULL,
    activity_date date NOT NULL,
    _version      bigint NOT NULL,
    PRIMARY KEY (account_id, activity_date)
);
CREATE TABLE IF NOT EXISTS merchant_daily_stats_tombstones (
    merchant_id   text NOT NULL,
    activity_date date NOT NULL,
    _version      bigint NOT NULL,
    PRIMARY KEY (merchant_id, activity_date)
);
