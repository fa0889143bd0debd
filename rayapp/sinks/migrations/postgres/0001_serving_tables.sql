-- Serving tables fed by `publish`. _version orders versions: an upsert only replaces a row
-- with a newer one, so replays and re-runs never move a row backwards.
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id    text PRIMARY KEY,
    account_id        text,
    merchant_id       text,
    merchant_name     text,
    merchant_category text,
    amount            numeric(18, 2),
    currency          text,
    country           text,
    channel           text,
    device_id         text,
    ip_address        text,
    status            text,
    description       text,
    is_fraud          boolean,
    event_time        timestamptz,
    updated_at        timestamptz,
    _updated_at       timestamptz,
    model_version     text,
    fraud_score       double precision,
    is_fraud_pred     boolean,
    scored_at         timestamptz,
    _version          timestamptz NOT NULL
);
-- One secondary index (an account's transactions): each more costs about a quarter of the upsert throughput;
-- add your own in a later migration if your queries need them.
CREATE INDEX IF NOT EXISTS transactions_account_idx ON transactions (account_id);

CREATE TABLE IF NOT EXISTS predictions (
    transaction_id text NOT NULL,
    model_version  text NOT NULL,
    fraud_score    double precision,
    is_fraud_pred  boolean,
    scored_at      timestamptz,
    _version       timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, model_version)
);

CREATE TABLE IF NOT EXISTS daily_account_activity (
    account_id         text NOT NULL,
    activity_date      date NOT NULL,
    txn_count          bigint,
    total_amount       numeric(18, 2),
    distinct_merchants bigint,
    first_event_time   timestamptz,
    last_event_time    timestamptz,
    fraud_count        bigint,
    _version           bigint NOT NULL,
    PRIMARY KEY (account_id, activity_date)
);

CREATE TABLE IF NOT EXISTS merchant_daily_stats (
    merchant_id       text NOT NULL,
    activity_date     date NOT NULL,
    txn_count         bigint,
    total_amount      numeric(18, 2),
    distinct_accounts bigint,
    fraud_count       bigint,
    fraud_rate        double precision,
    _version          bigint NOT NULL,
    PRIMARY KEY (merchant_id, activity_date)
);
