package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"vhdkit/chains"
)

// Jobs are live operations that outlive the request that started them:
// a merge copies for as long as the layer is big, and a client that goes
// away (Ctrl-C, a dropped connection) must not stop it half-way. Each
// runs in its own goroutine under the table's context, which only an
// explicit cancel or the server's stop ends. Ended jobs are kept (the
// last keepEnded) so a client can still fetch the result.

// keepEnded is how many ended jobs the table remembers.
const keepEnded = 64

// maxWait bounds how long GET /v1/jobs/{id}?wait=D holds a request.
const maxWait = 30 * time.Second

// jobTable holds the jobs of one control socket.
type jobTable struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// byID are the jobs running and the last ended ones, ended the
	// ids of those in the order they ended; next the last id given;
	// stopped refuses new jobs. Guarded by mu.
	byID    map[int64]*job
	ended   []int64
	next    int64
	stopped bool
}

// job is one live operation; info is guarded by mu, progress is atomic.
type job struct {
	done, total atomic.Int64
	cancel      context.CancelFunc
	finished    chan struct{}

	mu   sync.Mutex
	info Job
}

func newJobTable() *jobTable {
	ctx, cancel := context.WithCancel(context.Background())
	return &jobTable{ctx: ctx, cancel: cancel, byID: map[int64]*job{}}
}

// jobSpec is a job to start.
type jobSpec struct {
	kind, export, layer string
	// claim takes what the job holds (its export), knowing the job's id,
	// before the job exists; an error refuses the job. The release it
	// returns is called when the work is done, before the job is seen to
	// have ended: a client that saw the end may start the next one.
	claim func(id int64) (release func(), err error)
	// run does the work, reporting progress.
	run func(ctx context.Context, progress func(done, total int64)) (*chains.MergeResult, error)
}

// start claims and runs a new job.
func (t *jobTable) start(spec jobSpec) (*job, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return nil, fmt.Errorf("the server is stopping: no new job: %w", ErrStopping)
	}
	id := t.next + 1
	release, err := spec.claim(id)
	if err != nil {
		return nil, err
	}
	t.next = id
	ctx, cancel := context.WithCancel(t.ctx)
	j := &job{cancel: cancel, finished: make(chan struct{}),
		info: Job{ID: id, Kind: spec.kind, Export: spec.export, Layer: spec.layer, State: JobRunning, Started: time.Now().UTC()}}
	t.byID[id] = j
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		res, err := spec.run(ctx, j.progress)
		cancel()
		release()
		j.end(res, err)
		t.retire(id)
	}()
	return j, nil
}

// progress is a merge's progress callback.
func (j *job) progress(done, total int64) {
	j.done.Store(done)
	j.total.Store(total)
}

// end records how the job ended.
func (j *job) end(res *chains.MergeResult, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := time.Now().UTC()
	j.info.Ended = &now
	switch {
	case err == nil:
		j.info.State, j.info.Result = JobSucceeded, res
		if res != nil {
			j.done.Store(res.Copied)
			j.total.Store(max(j.total.Load(), res.Copied))
		}
	case errors.Is(err, context.Canceled) && errors.Is(err, chains.ErrMergeInterrupted):
		j.info.State = JobCancelled
		j.info.Error = apiErr(CodeMergeInterrupted, oneLine(err.Error())+
			"; meanwhile the export serves what it served, and running the same merge again live ('vhd ctl PATH merge' or 'undo commit') finishes it too")
	case errors.Is(err, context.Canceled):
		j.info.State = JobCancelled
		j.info.Error = apiErr(CodeCancelled, "cancelled before it changed anything: "+oneLine(err.Error()))
	default:
		j.info.State, j.info.Error = JobFailed, classify(err)
	}
	close(j.finished)
}

// snapshot is the job as a client sees it now.
func (j *job) snapshot() Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.info
	out.DoneBytes, out.TotalBytes = j.done.Load(), j.total.Load()
	return out
}

// requestCancel asks the job to stop; it reports false if it has ended.
func (j *job) requestCancel() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.info.Ended != nil {
		return false
	}
	j.info.State = JobCancelling
	j.cancel()
	return true
}

// wait waits for the job to end, at most d or until ctx or quit ends.
func (j *job) wait(ctx context.Context, d time.Duration, quit <-chan struct{}) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(min(d, maxWait))
	defer timer.Stop()
	select {
	case <-j.finished:
	case <-timer.C:
	case <-ctx.Done():
	case <-quit:
	}
}

// retire moves an ended job to the kept list, forgetting the oldest
// ended job beyond keepEnded.
func (t *jobTable) retire(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = append(t.ended, id)
	if len(t.ended) > keepEnded {
		delete(t.byID, t.ended[0])
		t.ended = t.ended[1:]
	}
}

// get finds a job by id.
func (t *jobTable) get(id int64) (*job, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.byID[id]
	return j, ok
}

// list is every job known, oldest first.
func (t *jobTable) list() []Job {
	t.mu.Lock()
	jobs := make([]*job, 0, len(t.byID))
	for id := int64(1); id <= t.next; id++ {
		if j, ok := t.byID[id]; ok {
			jobs = append(jobs, j)
		}
	}
	t.mu.Unlock()
	out := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.snapshot())
	}
	return out
}

// stop refuses new jobs, cancels the running ones and waits for them.
func (t *jobTable) stop(log *slog.Logger) {
	t.mu.Lock()
	t.stopped = true
	var running []*job
	for _, j := range t.byID {
		if !j.ended() {
			running = append(running, j)
		}
	}
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	for _, j := range running {
		if info := j.snapshot(); info.Error != nil {
			log.Warn("vhd: job stopped by the shutdown", "job", info.ID, "export", info.Export, "err", info.Error.Message)
		}
	}
}

func (j *job) ended() bool {
	select {
	case <-j.finished:
		return true
	default:
		return false
	}
}
