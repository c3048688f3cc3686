// Package ops is the operations HTTP layer of a titanic node: Prometheus
// metrics, a health check for load balancers, a JSON API for tickets,
// services, workers, clients and the cluster, and a live dashboard, all
// on one listener.
//
// The package reads the node only through small interfaces (Tickets,
// Queues, Workers, Counters, Cluster, Clients), which the command wires to
// the store, the broker, the titanic service and the raft node; tests use
// fakes. Nothing runs in the background: metrics are read from the
// sources at scrape time, and the latency histograms are fed by the
// ObserveCommit and ObserveFsync hooks.
//
// # Endpoints
//
//	GET    /healthz                 200 "active" on the node that serves (single node; raft leader; active
//	                                pair node), else 503 and its role ("follower", "passive", ...);
//	                                JSON with Accept: application/json or ?format=json
//	GET    /metrics                 Prometheus text exposition (private registry)
//	GET    /api/v1/tickets          ?service=&state=&after=&limit=&order=oldest|newest
//	                                → {"tickets": [...], "next": "<after= of the next page, or empty>"}
//	POST   /api/v1/tickets          submit: Content-Type application/json only (no cross-site form, no simple
//	                                CORS request), {"service", "body"|"body_base64"|"frames", "key"}
//	                                → 201 {"id", "duplicate": false}, 200 for a duplicate key; 503 not active
//	                                and the lifecycle: "delay"|"at", "priority", "ttl"|"deadline", "attempts",
//	                                "backoff", "backoff_max"
//	GET    /api/v1/tickets/{id}     status, attempts, times, reason, lifecycle; the reply frames (base64) when
//	                                done; ?body=1 adds the request frames (Bodies)
//	DELETE /api/v1/tickets/{id}     close (delete) the ticket; 503 on a node that is not active
//	POST   /api/v1/tickets/{id}/retry     failed → pending (409 if not failed)        } Jobs; 400 "not supported:
//	POST   /api/v1/tickets/{id}/cancel    {"reason"} optional (409 if finished)       } ..." while the cluster
//	GET    /api/v1/tickets/{id}/attempts  the attempts that ended without a reply    } version is too old
//	GET    /api/v1/dead             the dead set: failed tickets, ?service=&after=&limit=&order= (also
//	                                /api/v1/services/{service}/dead)
//	POST   /api/v1/services/{service}/pause, /resume          stop or restart dispatch (Jobs)
//	POST   /api/v1/services/{service}/retry-failed, /purge    retry or close every failed ticket of the service,
//	                                → {"retried"|"purged": n, "complete": bool}
//	GET    /api/v1/services         per service: tickets by state, oldest unfinished, workers idle/busy, paused
//	GET    /api/v1/workers          per service: workers, idle, busy
//	GET    /api/v1/clients          connected clients (titanic.hello presence; "tracked": false when not wired)
//	GET    /api/v1/cluster          mode, role, term, raft indexes, members, peers
//	GET    /api/v1/stats            the titanic service's counters
//	GET    /api/v1/queues           per service: pending, delayed, in flight, done, failed, workers, rates (titanic.stats)
//	GET    /                        the dashboard (embedded HTML, CSS and JavaScript)
//
// Errors are JSON {"error": "..."}: 400 for a malformed ID, query or
// submit, and "not supported: ..." for what the cluster cannot take yet,
// 409 for a retry of a ticket that has not failed or a cancel of a
// finished one, 413 for a submit over Config.MaxSubmitBytes, 415 for a
// POST that is neither JSON nor marked with X-Titanic-Request (403 for
// a cross-origin one: see crossSite), 401 without the token, 404 for an
// unknown ticket or endpoint, 405 for a
// wrong method, 503 when the node is not active (writes), a source is
// missing or too many requests are in flight, 504 when a source timed out.
//
// # Security
//
// The command binds the listener to localhost by default. Before exposing
// it, set Config.Token: /metrics and /api/v1/* then require
// "Authorization: Bearer TOKEN" (compared in constant time). /healthz and
// the dashboard's static files carry no data and need no token; the page
// asks for the token when the API answers 401, or takes it from the URL
// fragment (http://host:port/#token=TOKEN, never sent to the server) and
// keeps it in the tab's sessionStorage. Without a token, requests whose
// Host is not localhost, an IP literal or in Config.AllowedHosts are
// refused (403), so that a web page cannot reach a local listener through
// DNS rebinding. Every response sets nosniff and no-framing headers; the
// dashboard sets a Content-Security-Policy that allows only its own files
// and same-origin API calls.
//
// # Limits
//
// Pages hold at most MaxListLimit (1000) tickets, a reply larger than
// Config.MaxReplyBytes is left out of the ticket answer, request bodies
// are cut at Config.MaxBodyBytes and headers at Config.MaxHeaderBytes,
// at most Config.MaxInFlight requests run at once (more get 503), each
// source call gets Config.RequestTimeout, and ListenAndServe sets the
// http.Server's header, read, write and idle timeouts and shuts down
// within Config.ShutdownTimeout.
//
// # Metrics
//
// Families (all gauges unless noted):
//
//	titanic_build_info{version}                  1
//	titanic_queue_depth{service}                 pending tickets waiting for a worker (delayed ones not due yet left out)
//	titanic_tickets{service,state}               stored tickets by state (pending, dispatched, done, failed, cancelled)
//	titanic_queue_oldest_age_seconds{service}    age of the oldest unfinished ticket not delayed into the future (a delayed one now due from its due time)
//	titanic_workers{service,state}               idle and busy workers (0 for a service with tickets and none)
//	titanic_broker_queued_requests{service}      plain MDP requests queued in the broker
//	titanic_services_omitted                     services summed under service="(other)" in the families above
//	titanic_submits_total, titanic_duplicate_submits_total, titanic_closes_total, titanic_lookups_total,
//	titanic_dispatches_total, titanic_redeliveries_total, titanic_replies_total, titanic_late_replies_total,
//	titanic_failures_total, titanic_busy_total, titanic_bad_requests_total, titanic_commits_total,
//	titanic_committed_ops_total, titanic_commit_errors_total       counters
//	titanic_verdict_retries_total, titanic_unsent_dispatches_total counters
//	titanic_disk_full                            1 while submits are refused for want of disk space
//	titanic_disk_free_bytes, titanic_disk_reserve_bytes   free space and reserve of the fullest watched file system
//	titanic_leases                               tickets held by workers
//	titanic_commit_duration_seconds              histogram (ObserveCommit)
//	titanic_fsync_duration_seconds               histogram (ObserveFsync)
//	titanic_active                               1 on the node that serves
//	titanic_role{role}                           1 for the current role, 0 for the others (single, leader,
//	                                             follower, candidate, active, passive, primary, backup)
//	titanic_raft_term, titanic_raft_last_index, titanic_raft_commit_index, titanic_raft_applied_index
//	titanic_raft_commit_lag                      commit index − applied index
//	titanic_cluster_members                      servers in the raft configuration
//	titanic_peers, titanic_peer_capacity         peered clusters and the spare capacity the live ones advertise
//	titanic_connected_clients                    clients connected (presence)
//	titanic_ops_source_errors_total{source}      counter: source calls that failed during scrapes (queues,
//	                                             workers, cluster, clients; each from 0)
//	go_*, process_*                              Go runtime and process (RSS, file descriptors)
//
// A failing source is logged and counted, and only its families are left
// out of that scrape.
//
// The per-service families show at most Config.MaxServices services
// (DefaultMaxServices), those with the most tickets; the others are
// summed under service="(other)" (OtherService), and so are the rows of
// GET /api/v1/services and GET /api/v1/queues, so that the names clients make up cannot grow a
// scrape without limit.
package ops
