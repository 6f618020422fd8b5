// A small fixed thread pool behind lowbit::cpu::parallel_for.
//
// Each parallel_for publishes a Job with its own chunk counter. Workers take a reference to the current
// Job under the lock and claim chunks from that Job only, so a worker that wakes late can never claim a
// chunk of a later job with an earlier job's function (claims on a finished Job find no chunk left).
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit::cpu {
namespace {

thread_local bool t_in_parallel = false;

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    std::lock_guard<std::mutex> run_lock(run_mu_);  // never while a job runs
    stop();
    n = std::max(1, n);
    stopping_ = false;
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this] { loop(); });
  }

  // Runs chunks [0, chunks) of fn on the workers and the caller; returns when all have finished.
  void run(int64_t chunks, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> run_lock(run_mu_);  // one job at a time
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->chunks = chunks;
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = job;
      ++generation_;
    }
    cv_.notify_all();
    work(*job);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return job->done.load() == chunks; });
    job_.reset();
  }

 private:
  // Claims and runs chunks of `job` until none is left. Only called while the job is unfinished or
  // exhausted, so fn (owned by run()'s caller) is alive whenever a chunk is claimed.
  void work(Job& job) {
    int64_t finished = 0;
    for (;;) {
      const int64_t c = job.next.fetch_add(1);
      if (c >= job.chunks) break;
      t_in_parallel = true;
      (*job.fn)(c);
      t_in_parallel = false;
      ++finished;
    }
    if (finished > 0 && job.done.fetch_add(finished) + finished == job.chunks) {
      std::lock_guard<std::mutex> lk(mu_);  // pairs with the waiter's predicate check
      done_cv_.notify_all();
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || (generation_ != seen && job_ != nullptr); });
        if (stopping_) return;
        seen = generation_;
        job = job_;
      }
      work(*job);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

Pool& pool() {
  static Pool p(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int threads = t_in_parallel ? 1 : num_threads();
  if (threads <= 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // A few chunks per thread balance uneven work without much scheduling cost.
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, static_cast<int64_t>(threads) * 4);
  int64_t per = (n + chunks - 1) / chunks;
  chunks = (n + per - 1) / per;
  const std::function<void(int64_t)> chunk = [&](int64_t c) {
    int64_t b = c * per;
    fn(b, std::min(n, b + per));
  };
  pool().run(chunks, chunk);
}

}  // namespace lowbit::cpu
