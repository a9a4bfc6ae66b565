-- The person's details in the security log, sealed under a key of the account's own, so that
-- deleting the account (destroying that key) leaves the chain whole and the details unreadable.
--
-- Each account's data key: 32 random bytes, sealed (AES-256-GCM) under a key derived from the
-- log key, which rests apart from the database. Deleting the account deletes this row.
CREATE TABLE account_keys (
    account_id BLOB PRIMARY KEY,
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- An event's personal details (device name, address, and its detail: place, key names, the
-- operator's words, the app) as one AES-256-GCM ciphertext under its account's data key. The
-- column is also the event's format: NULL for events written before this version (their hash
-- covers those columns in clear, as before), set for every event written since (device_name,
-- address are NULL and detail is '{}'; the hash covers the ciphertext, so it still verifies
-- once the key is gone). Adding a column changes no stored row, so no trigger is lifted.
ALTER TABLE events ADD COLUMN sealed BLOB;
