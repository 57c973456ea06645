//! The allocator's cap (`airlock::memory`): threads share at most one malloc arena per core.
//!
//! Its own test binary with one test, so no other test's threads have made arenas first.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn sixteen_threads_share_at_most_one_arena_per_core() {
    assert!(
        std::env::var_os("MALLOC_ARENA_MAX").is_none(),
        "unset MALLOC_ARENA_MAX: it overrides the cap under test"
    );
    airlock::memory::limit_arenas();
    // Each new thread's first allocation takes an arena of its own while the cap allows (glibc
    // makes one per thread up to its limit). The arenas are counted while all 16 threads are
    // alive and holding their allocations.
    let allocated = std::sync::Arc::new(std::sync::Barrier::new(17));
    let counted = std::sync::Arc::new(std::sync::Barrier::new(17));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (a, c) = (allocated.clone(), counted.clone());
            std::thread::spawn(move || {
                let held: Vec<Vec<u8>> = (0..100).map(|i| vec![1u8; 1000 + i]).collect();
                a.wait();
                c.wait();
                held.iter().map(Vec::len).sum::<usize>()
            })
        })
        .collect();
    allocated.wait();
    let arenas = malloc_info().matches("<heap nr=").count();
    counted.wait();
    for t in threads {
        assert_eq!(t.join().unwrap(), (0..100).map(|i| 1000 + i).sum::<usize>());
    }
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    assert!(arenas >= 1, "malloc_info listed no arena");
    assert!(
        arenas <= cores,
        "{arenas} malloc arenas for {cores} cores: the cap is not applied"
    );
}

/// glibc's `malloc_info` XML.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_info() -> String {
    let mut buf: *mut libc::c_char = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: open_memstream owns `buf` until fclose, which leaves it holding `len` bytes
    // allocated with malloc; they are copied out, then freed.
    unsafe {
        let f = libc::open_memstream(&mut buf, &mut len);
        assert!(!f.is_null(), "open_memstream failed");
        assert_eq!(libc::malloc_info(0, f), 0, "malloc_info failed");
        libc::fclose(f);
        let s = std::slice::from_raw_parts(buf.cast::<u8>(), len);
        let out = String::from_utf8_lossy(s).into_owned();
        libc::free(buf.cast());
        out
    }
}
