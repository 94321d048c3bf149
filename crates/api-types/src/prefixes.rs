//! Packed prefixes over HTTP (`GET /api/v1/locks/{lock_hash}/prefix.tar.zst`):
//! the body is the archive itself; these headers say what a node needs to
//! check it and to place it.

/// The archive's sha256 (lowercase hex), as the database recorded it when
/// it was published; also the `ETag`. A node refuses an archive that does
/// not hash to it.
pub const PREFIX_SHA256_HEADER: &str = "x-envstore-prefix-sha256";

/// The lock the prefix was built from (lowercase hex).
pub const PREFIX_LOCK_HASH_HEADER: &str = "x-envstore-lock-hash";

/// Where the prefix is on the server (`<data-dir>/prefixes/<short hash>`).
/// Conda prefixes embed their own path: a node unpacks it at the same path
/// under its data folder, which works only with the same data folder.
pub const PREFIX_PATH_HEADER: &str = "x-envstore-prefix-path";

/// The archive's media type.
pub const PREFIX_CONTENT_TYPE: &str = "application/zstd";

/// The name of a lock's packed prefix under `/api/v1/locks/{lock_hash}/`.
pub const PREFIX_FILE: &str = "prefix.tar.zst";
