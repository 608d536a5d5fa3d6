#![doc = include_str!("../README.md")]

#[cfg(feature = "crypto")]
#[doc(inline)]
pub use manna_crypto as crypto;

#[cfg(feature = "lock")]
#[doc(inline)]
pub use manna_lock as lock;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use manna_lock_redis as lock_redis;

#[cfg(feature = "store")]
#[doc(inline)]
pub use manna_store_diesel as store;

#[cfg(feature = "migrate")]
#[doc(inline)]
pub use manna_migrate as migrate;
