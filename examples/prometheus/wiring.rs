//! What the example does between installing the exporter and scraping it:
//! exercise manna's crypto and locks and compute the key status, so every
//! kind of metric has a value. Shared with `tests/prometheus.rs`.

use std::error::Error;
use std::time::Duration;

use manna::crypto::{AesKey, KeyMetadata, Keyring, Status};
use manna::lock::LockManager;

/// The AAD of the example's column.
const AAD: &[u8] = b"accounts.access_token";

/// Encrypts and decrypts a few values, fails one decryption, takes and
/// releases a lock with the in-memory backend, and computes the key status
/// (which sets the key gauges). Returns the status.
pub(crate) fn exercise() -> Result<Status, Box<dyn Error>> {
    let now = time::OffsetDateTime::now_utc();
    let keyring = Keyring::builder()
        .primary_with_metadata(
            AesKey::generate(),
            KeyMetadata {
                created_at: Some(now - time::Duration::days(10)),
                expires_at: Some(now + time::Duration::days(80)),
            },
        )
        .previous(AesKey::generate())
        .build()?;
    for i in 0..3 {
        let token = keyring.encrypt(format!("token-{i}").as_bytes(), AAD)?;
        keyring.decrypt(&token, AAD)?;
    }
    // A value that is not an envelope: counted as a decryption failure.
    let _ = keyring.decrypt("mn1:not-a-token", AAD);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let locks = LockManager::in_memory();
        let guard = locks
            .lock_resource("bank_link", "item-42", Duration::from_secs(1))
            .await?;
        guard.release().await?;
        Ok::<_, manna::lock::LockError>(())
    })?;

    Ok(keyring.status())
}
