//! Locks as weft takes them.
use std::sync::{Mutex, MutexGuard};

/// Takes `mutex` even if a thread panicked while holding it. weft's critical sections only
/// insert, remove or replace whole values, so the data is consistent whatever the panic
/// interrupted; refusing the lock would turn one panic into a panic of every later caller.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let held = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("poisoning the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}
