//! The process's allocator settings: what keeps the server's memory flat as files accumulate.
//!
//! glibc's malloc gives threads arenas of their own, up to eight per core (16 on 2 cores).
//! Each keeps the memory freed into it for reuse, so the server's resident memory rose with
//! the work done: the many-files benchmark (benches/many.sh, 4 KiB files) peaked at 50 MiB
//! after 10,000 files and 61 MiB after 100,000, 20 MiB of it memory freed but held in
//! arenas. With one arena per core (at least two) the same runs peaked at 34 and 40 MiB, with
//! the same upload, scan and release times within the machine's noise (interleaved runs).

/// Arenas per core: one, but never fewer than two (a lone arena serialises every allocation).
const MIN_ARENAS: usize = 2;

/// Caps glibc's malloc arenas at one per core (at least [`MIN_ARENAS`]). Call it before the
/// async runtime starts its threads: arenas already made stay. `MALLOC_ARENA_MAX` in the
/// environment, where set, wins. Does nothing on another C library.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(MIN_ARENAS, |n| n.get());
        let arenas = i32::try_from(cores.max(MIN_ARENAS)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets a tunable of the allocator; it takes no pointers.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
