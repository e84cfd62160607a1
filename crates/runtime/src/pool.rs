//! A persistent pool of kernel worker threads. Threads are created once per process; between
//! steps they spin briefly, then sleep, so a step that follows soon after the last one starts
//! without a wake-up or a thread creation (threads are not pinned to cores).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// One unit of work: a function and its argument, sent to a worker.
#[derive(Clone, Copy)]
pub(crate) struct Task {
    run: unsafe fn(*const (), usize),
    context: *const (),
    part: usize,
}

// SAFETY: a task is only executed while `Pool::run` waits for it, so the context it points to
// outlives its use; the caller of `run` guarantees the work is safe to do on another thread.
unsafe impl Send for Task {}

struct Shared {
    /// Incremented once per `run`; workers compare it with the last generation they served.
    generation: AtomicU64,
    /// Workers that have not finished the current generation.
    pending: AtomicUsize,
    /// Set when a worker's task panicked; `run` re-raises it on the caller.
    panicked: AtomicBool,
    tasks: Mutex<Vec<Option<Task>>>,
    wake: Condvar,
}

/// The process-wide pool.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    /// Held for the duration of a `run`, so that optimizers stepping on different threads
    /// take turns.
    busy: Mutex<()>,
}

impl Pool {
    /// The pool, with one worker per available core beyond the calling thread.
    pub(crate) fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Pool::new(cores.saturating_sub(1).max(1))
        })
    }

    fn new(workers: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            tasks: Mutex::new(vec![None; workers]),
            wake: Condvar::new(),
        });
        for index in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("optjit-worker-{index}"))
                .spawn(move || worker(&shared, index))
                .expect("spawning an optjit worker thread");
        }
        Pool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The largest number of parts `run` executes at once.
    pub(crate) fn max_parts(&self) -> usize {
        self.workers + 1
    }

    /// Runs `work(part)` for every part in `0..parts` (at most [`Pool::max_parts`]), part 0 on
    /// the calling thread, and returns when all are done.
    pub(crate) fn run<F: Fn(usize) + Sync>(&self, parts: usize, work: &F) {
        assert!(
            parts >= 1 && parts <= self.max_parts(),
            "{parts} parts for a pool of {}",
            self.max_parts()
        );
        if parts == 1 {
            work(0);
            return;
        }
        unsafe fn call<F: Fn(usize)>(context: *const (), part: usize) {
            // SAFETY: `context` is the `&F` passed to `run`, alive until `run` returns.
            unsafe { (*(context as *const F))(part) }
        }
        let _turn = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &self.shared;
        {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, task) in tasks.iter_mut().enumerate() {
                *task = (slot + 1 < parts).then_some(Task {
                    run: call::<F>,
                    context: work as *const F as *const (),
                    part: slot + 1,
                });
            }
            shared.pending.store(self.workers, Ordering::Release);
            shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        shared.wake.notify_all();
        // Even if `work(0)` unwinds, wait for the workers before `work` goes out of scope.
        let wait = WaitForWorkers(shared);
        work(0);
        drop(wait);
        if shared.panicked.swap(false, Ordering::AcqRel) {
            panic!("an optjit worker thread panicked while running a step");
        }
    }
}

/// Waits, when dropped, until every worker has finished the current generation.
struct WaitForWorkers<'a>(&'a Shared);

impl Drop for WaitForWorkers<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Spin for a while, then sleep until the generation moves.
        let start = Instant::now();
        while shared.generation.load(Ordering::Acquire) == seen && start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        let task = {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::Acquire) == seen {
                tasks = shared.wake.wait(tasks).unwrap_or_else(|e| e.into_inner());
            }
            seen = shared.generation.load(Ordering::Acquire);
            tasks[index].take()
        };
        if let Some(task) = task {
            // SAFETY: see `Task`. A panic is caught so that `pending` always counts down.
            let run =
                std::panic::AssertUnwindSafe(|| unsafe { (task.run)(task.context, task.part) });
            if std::panic::catch_unwind(run).is_err() {
                shared.panicked.store(true, Ordering::Release);
            }
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_exactly_once_per_call() {
        let pool = Pool::new(3);
        for parts in [1, 2, 4, 3, 4] {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run(parts, &|part| {
                hits[part].fetch_add(1, Ordering::Relaxed);
            });
            let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
            let want: Vec<usize> = (0..4).map(|p| usize::from(p < parts)).collect();
            assert_eq!(counts, want);
        }
    }
}
