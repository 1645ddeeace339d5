//! The edge's heap trim against glibc's malloc, in a test binary of its own: no edge runs in
//! this process, so no other trim can give the burst back before the test looks.

use shipit_edge::heap::{Policy, check, resident_bytes};

/// Memory freed in the middle of a heap stays resident until a trim gives it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_burst_freed_in_the_middle_of_the_heap_is_given_back() {
    // On its own thread: an arena of its own is more likely, and the burst's chunks are
    // not mixed with another test's.
    std::thread::spawn(|| {
        const CHUNK: usize = 4 << 10;
        const CHUNKS: usize = 24 << 10; // 96 MiB
        let mut burst: Vec<Vec<u8>> = Vec::with_capacity(CHUNKS);
        let mut keep: Vec<Vec<u8>> = Vec::with_capacity(CHUNKS / 64);
        for i in 0..CHUNKS {
            burst.push(vec![i as u8; CHUNK]);
            if i % 64 == 0 {
                // A small live allocation between the chunks, as connections that stay
                // open leave between those that closed: the heap's top is never free.
                keep.push(vec![1u8; 64]);
            }
        }
        let grown = resident_bytes().unwrap();
        drop(burst);
        let freed = resident_bytes().unwrap();
        assert!(
            freed + (48 << 20) > grown,
            "malloc gave the burst back on its own ({} → {} MiB); this test shows nothing",
            grown >> 20,
            freed >> 20
        );
        let mut policy = Policy::default();
        let trim = check(&mut policy).unwrap();
        assert!(
            trim.after + (48 << 20) <= trim.before,
            "a trim gave back less than half of 96 MiB freed: {} → {} MiB",
            trim.before >> 20,
            trim.after >> 20
        );
        // Nothing grew since: the next check does not trim again.
        let again = check(&mut policy).unwrap();
        assert_eq!(again.before, again.after);
        drop(keep);
    })
    .join()
    .unwrap();
}
