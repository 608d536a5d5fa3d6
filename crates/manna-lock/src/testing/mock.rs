//! mockall mock of the port.
#![allow(missing_docs)]

use std::time::Duration;

use crate::{Attempt, Lease, LockBackend, LockError, ReleaseWatch, SessionId};

mockall::mock! {
    /// A mockall mock of [`LockBackend`]: set expectations with
    /// `expect_try_acquire()`, `expect_release()`, and so on.
    pub LockBackend {}

    #[async_trait::async_trait]
    impl LockBackend for LockBackend {
        fn describe(&self) -> String;
        async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Attempt, LockError>;
        async fn release(&self, lease: &Lease) -> Result<bool, LockError>;
        async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<(), LockError>;
        async fn is_held(&self, lease: &Lease) -> Result<bool, LockError>;
        async fn try_acquire_in_session(
            &self,
            name: &str,
            ttl: Duration,
            session: &SessionId,
            wait_edge: Duration,
        ) -> Result<Attempt, LockError>;
        async fn end_wait(&self, session: &SessionId, name: &str) -> Result<(), LockError>;
        fn watch(&self, name: &str) -> ReleaseWatch;
    }
}
