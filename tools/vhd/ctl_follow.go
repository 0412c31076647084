package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"vhdkit/service"
)

// follow shows a job to its end: a progress bar on a terminal, then
// what it did. With --no-wait it prints the job as it is and returns.
// An interrupted vhd ctl leaves the job running and says how to find it
// again. A job that failed or was cancelled exits 1.
func (x *ctlRun) follow(ctx context.Context, j *service.Job) error {
	if x.o.noWait {
		if x.o.json {
			return writeJSON(x.e, j)
		}
		fmt.Fprintf(x.e.stdout, "job %d: %s\n", j.ID, jobLine(j))
		fmt.Fprintf(x.e.stdout, "follow it with 'vhd ctl %s wait %d'; stop it with 'vhd ctl %s cancel %d'\n", x.arg, j.ID, x.arg, j.ID)
		return nil
	}
	bar := maybeBar(x.e, x.o.noProgress || x.o.json)
	defer bar.finish()
	wait := 10 * time.Second
	if bar != nil {
		wait = 200 * time.Millisecond
	}
	for !j.Finished() {
		next, err := x.client.Job(ctx, j.ID, wait)
		if ctx.Err() != nil {
			bar.finish()
			return fmt.Errorf("stopped following job %d, which goes on: 'vhd ctl %s wait %d' follows it again, 'vhd ctl %s cancel %d' stops it", j.ID, x.arg, j.ID, x.arg, j.ID)
		}
		if err != nil {
			return x.serverError(err)
		}
		j = next
		if j.TotalBytes > 0 {
			bar.update(j.DoneBytes, j.TotalBytes)
		}
	}
	bar.finish()
	return x.jobEnded(j)
}

// jobEnded prints how a job ended; one that did not succeed is an error.
func (x *ctlRun) jobEnded(j *service.Job) error {
	if x.o.json {
		if err := writeJSON(x.e, j); err != nil {
			return err
		}
	}
	if x.cancelling {
		return x.cancelEnded(j)
	}
	if j.State != service.JobSucceeded {
		msg := fmt.Sprintf("job %d (%s of %s, export %s) %s", j.ID, j.Kind, j.Layer, j.Export, j.State)
		if j.Error != nil {
			msg += ": " + j.Error.Message
		}
		if j.Error != nil && j.Error.Code == service.CodeMergeInterrupted {
			msg += fmt.Sprintf("; export %s goes on serving what it served", j.Export)
		}
		if x.o.json {
			return exitStatus(exitFailed) // the JSON says it all
		}
		return errors.New(msg)
	}
	if x.o.json {
		return nil
	}
	r := j.Result
	switch j.Kind {
	case service.JobUndoCommit:
		fmt.Fprintf(x.e.stdout, "committed %s of changes into %s; writes go on to a fresh undo disk, %s\n", human(r.Copied), r.Target, j.Layer)
	default:
		fmt.Fprintf(x.e.stdout, "merged %s of data into %s; removed %s\n", human(r.Copied), r.Target, strings.Join(r.Removed, ", "))
		if len(r.Relinked) > 0 {
			fmt.Fprintf(x.e.stdout, "moved onto %s: %s\n", r.Target, strings.Join(r.Relinked, ", "))
		}
	}
	return nil
}

// jobLine says in a few words what a job is and where it stands.
func jobLine(j *service.Job) string {
	what := fmt.Sprintf("%s of %s (export %s)", j.Kind, j.Layer, j.Export)
	if j.Kind == service.JobUndoCommit {
		what = fmt.Sprintf("undo commit of export %s", j.Export)
	}
	switch {
	case j.State == service.JobRunning || j.State == service.JobCancelling:
		pct := 0.0
		if j.TotalBytes > 0 {
			pct = 100 * float64(j.DoneBytes) / float64(j.TotalBytes)
		}
		return fmt.Sprintf("%s: %s, %.0f%% (%s of %s)", what, j.State, pct, ibytes(j.DoneBytes), ibytes(j.TotalBytes))
	case j.Error != nil:
		return fmt.Sprintf("%s: %s: %s", what, j.State, j.Error.Message)
	}
	return fmt.Sprintf("%s: %s", what, j.State)
}

// cancelEnded reports the end of a job vhd ctl cancel stopped: the
// state it was left in is the result, and a job that ended otherwise
// (it finished first, or failed) makes the cancel fail.
func (x *ctlRun) cancelEnded(j *service.Job) error {
	if j.State == service.JobCancelled {
		if !x.o.json {
			fmt.Fprintf(x.e.stdout, "job %d cancelled: %s\n", j.ID, j.Error.Message)
		}
		return nil
	}
	x.cancelling = false
	if err := x.jobEnded(j); err != nil {
		return err
	}
	return fmt.Errorf("job %d ended (%s) before the cancel took effect", j.ID, j.State)
}
