package service

import (
	"context"
	"net/http"
)

// The backup routes (docs/CLI.md, "vhd backup"):
//
//	POST /v1/exports/{name}/backup       BeginRequest -> 201 Backup
//	POST /v1/exports/{name}/backup/end   EndRequest -> 200 BackupEnd
//	GET  /v1/backups                     BackupList

// backupRoutes adds the backup routes with route (control_api.go).
func (cs *controlServer) backupRoutes(route func(path string, byMethod map[string]handlerFunc)) {
	route("/v1/exports/{name}/backup", map[string]handlerFunc{"POST": cs.postBackup})
	route("/v1/exports/{name}/backup/end", map[string]handlerFunc{"POST": cs.postBackupEnd})
	route("/v1/backups", map[string]handlerFunc{"GET": cs.getBackups})
}

func (cs *controlServer) postBackup(r *http.Request) (reply, *APIError) {
	var req BeginRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	b, aerr := cs.beginBackup(detached(r), r.PathValue("name"), req)
	return reply{http.StatusCreated, b}, aerr
}

func (cs *controlServer) postBackupEnd(r *http.Request) (reply, *APIError) {
	var req EndRequest
	if aerr := decodeBody(r.Body, &req); aerr != nil {
		return reply{}, aerr
	}
	e, aerr := cs.endBackup(detached(r), r.PathValue("name"), req)
	return reply{http.StatusOK, e}, aerr
}

func (cs *controlServer) getBackups(r *http.Request) (reply, *APIError) {
	return ok(cs.listBackups())
}

// BeginBackup is POST /v1/exports/{name}/backup.
func (c *ControlClient) BeginBackup(ctx context.Context, name string, req BeginRequest) (*Backup, error) {
	var b Backup
	return &b, c.do(ctx, "POST", exportPath(name, "/backup"), req, &b)
}

// EndBackup is POST /v1/exports/{name}/backup/end.
func (c *ControlClient) EndBackup(ctx context.Context, name string, req EndRequest) (*BackupEnd, error) {
	var e BackupEnd
	return &e, c.do(ctx, "POST", exportPath(name, "/backup/end"), req, &e)
}

// Backups is GET /v1/backups.
func (c *ControlClient) Backups(ctx context.Context) (*BackupList, error) {
	var l BackupList
	return &l, c.do(ctx, "GET", "/v1/backups", nil, &l)
}
