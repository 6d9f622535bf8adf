/*
 * Harness services: a private redis-server and a private PostgreSQL, each
 * in its own temporary folder on a free loopback port.  The processes are
 * started through h_proc_start() so the harness owns their pids (no
 * daemonizing, no pg_ctl).
 */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <glob.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DB_POLL_MS          20
#define DB_REDIS_START_MS   15000
#define DB_PG_INITDB_MS     120000
#define DB_PG_START_MS      60000
#define DB_STOP_MS          10000
#define DB_START_TRIES      3
#define DB_PG_USER          "aiproxy"
#define DB_PG_DB            "aiproxy"
#define DB_PG_SYSTEM_USER   "postgres"
#define DB_PG_BINDIR_ENV    "AIPROXY_PG_BINDIR"
#define DB_REDIS_SERVER_ENV "AIPROXY_REDIS_SERVER"

static long long
db_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
db_pause(void)
{
	struct timespec ts = {0, DB_POLL_MS * 1000000L};

	nanosleep(&ts, NULL);
}

/* Copies a formatted path into buf; -ENAMETOOLONG when it does not fit. */
static int
db_path(char *buf, size_t len, const char *dir, const char *leaf)
{
	int n;

	n = snprintf(buf, len, "%s/%s", dir, leaf);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

static bool
db_is_exec(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	       access(path, X_OK) == 0;
}

/* Searches $PATH (then /usr/bin, /usr/sbin) for name into buf. */
static int
db_find_in_path(const char *name, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	const char *p, *end;
	char dir[PATH_MAX];
	size_t dlen;

	if (path == NULL || path[0] == '\0')
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p != '\0'; p = end) {
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		dlen = (size_t)(end - p);
		if (*end == ':')
			end++;
		if (dlen == 0 || dlen >= sizeof(dir))
			continue;
		memcpy(dir, p, dlen);
		dir[dlen] = '\0';
		if (db_path(buf, len, dir, name) == 0 && db_is_exec(buf))
			return 0;
	}
	if (db_path(buf, len, "/usr/sbin", name) == 0 && db_is_exec(buf))
		return 0;
	if (db_path(buf, len, "/usr/bin", name) == 0 && db_is_exec(buf))
		return 0;
	return -ENOENT;
}

static int
db_redis_server_path(char *buf, size_t len)
{
	const char *env = getenv(DB_REDIS_SERVER_ENV);
	int n;

	if (env != NULL && env[0] != '\0') {
		n = snprintf(buf, len, "%s", env);
		if (n < 0 || (size_t)n >= len)
			return -ENAMETOOLONG;
		return db_is_exec(buf) ? 0 : -ENOENT;
	}
	return db_find_in_path("redis-server", buf, len);
}

/* Numeric major version of a /usr/lib/postgresql/<major>/bin/postgres. */
static long
db_pg_major(const char *path)
{
	const char *prefix = "/usr/lib/postgresql/";
	char *end;
	long v;

	if (strncmp(path, prefix, strlen(prefix)) != 0)
		return -1;
	errno = 0;
	v = strtol(path + strlen(prefix), &end, 10);
	if (errno != 0 || *end != '/')
		return -1;
	return v;
}

/*
 * The folder holding initdb and postgres: $AIPROXY_PG_BINDIR, else the
 * newest /usr/lib/postgresql/<major>/bin, else the folder of a postgres
 * found in $PATH.
 */
static int
db_pg_bindir(char *buf, size_t len)
{
	const char *env = getenv(DB_PG_BINDIR_ENV);
	char exe[PATH_MAX];
	glob_t g;
	size_t i, best = 0;
	long best_v = -1, v;
	char *slash;
	int n, rc = -ENOENT;

	if (env != NULL && env[0] != '\0') {
		n = snprintf(buf, len, "%s", env);
		return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
	}
	if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) == 0) {
		for (i = 0; i < g.gl_pathc; i++) {
			v = db_pg_major(g.gl_pathv[i]);
			if (v > best_v && db_is_exec(g.gl_pathv[i])) {
				best_v = v;
				best = i;
			}
		}
		if (best_v >= 0) {
			n = snprintf(buf, len, "%s", g.gl_pathv[best]);
			rc = (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
		}
		globfree(&g);
	}
	if (rc == -ENOENT) {
		if (db_find_in_path("postgres", exe, sizeof(exe)) != 0 ||
		    realpath(exe, buf) == NULL)
			return -ENOENT;
		rc = 0;
	}
	if (rc != 0)
		return rc;
	slash = strrchr(buf, '/');
	if (slash == NULL)
		return -ENOENT;
	*slash = '\0';
	return 0;
}

/* Prints a child's log to stderr so a failed start explains itself. */
static void
db_dump_log(const char *what, const char *log_path)
{
	size_t len = 0;
	char *text = h_read_file(log_path, &len);

	fprintf(stderr, "harness: %s failed to start; its log (%s):\n", what,
	    log_path);
	if (text != NULL) {
		fwrite(text, 1, len, stderr);
		if (len > 0 && text[len - 1] != '\n')
			fputc('\n', stderr);
	}
	free(text);
}

/* Creates an empty file (the child appends to it), mode 0644. */
static int
db_touch(const char *path)
{
	FILE *f = fopen(path, "a");

	if (f == NULL)
		return -errno;
	fclose(f);
	return 0;
}

/* ---- redis ---- */

/* true when a PING over a fresh connection answers PONG. */
static bool
db_redis_ping(int port)
{
	struct timeval tv = {1, 0};
	redisContext *c;
	redisReply *reply;
	bool ok = false;

	c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (c == NULL)
		return false;
	if (c->err != 0)
		goto out_free;
	if (redisSetTimeout(c, tv) != REDIS_OK)
		goto out_free;
	reply = redisCommand(c, "PING");
	if (reply != NULL) {
		ok = reply->type == REDIS_REPLY_STATUS && reply->str != NULL &&
		     strcmp(reply->str, "PONG") == 0;
		freeReplyObject(reply);
	}
out_free:
	redisFree(c);
	return ok;
}

/* Starts redis on r->port and waits until it answers; -ECHILD when it
 * exited (e.g. the port was taken). */
static int
db_redis_launch(struct h_redis *r, char *exe, const char *log_path)
{
	char port_s[16];
	long long deadline;
	int rc;

	snprintf(port_s, sizeof(port_s), "%d", r->port);

	{
		char *const argv[] = {exe, "--port", port_s, "--bind",
		    "127.0.0.1", "--dir", r->dir, "--save", "", "--appendonly",
		    "no", "--daemonize", "no", "--protected-mode", "yes",
		    "--unixsocket", "", "--logfile", "", "--loglevel", "notice",
		    NULL};

		rc = h_proc_start(
		    &r->proc, "redis-server", argv, NULL, log_path, NULL);
	}
	if (rc != 0)
		return rc;

	deadline = db_now_ms() + DB_REDIS_START_MS;
	for (;;) {
		if (db_redis_ping(r->port))
			return 0;
		if (!h_proc_alive(&r->proc) || db_now_ms() > deadline) {
			rc = h_proc_alive(&r->proc) ? -ETIMEDOUT : -ECHILD;
			db_dump_log("redis-server", log_path);
			h_proc_stop(&r->proc, SIGKILL, DB_STOP_MS);
			r->proc.pid = 0;
			return rc;
		}
		db_pause();
	}
}

/* One attempt on a fresh free port; -ECHILD when redis exited (e.g. the
 * port was taken between h_free_port() and its bind). */
static int
db_redis_try(struct h_redis *r, char *exe, const char *log_path)
{
	r->port = h_free_port();
	if (r->port <= 0)
		return r->port < 0 ? r->port : -EADDRNOTAVAIL;
	return db_redis_launch(r, exe, log_path);
}

int
h_redis_restart(struct h_redis *r)
{
	char exe[PATH_MAX], log_path[PATH_MAX];
	int rc;

	if (r->proc.pid > 0)
		return -EBUSY;
	if ((rc = db_redis_server_path(exe, sizeof(exe))) != 0 ||
	    (rc = db_path(
		 log_path, sizeof(log_path), r->dir, "redis-again.log")) != 0)
		return rc;
	return db_redis_launch(r, exe, log_path);
}

int
h_redis_start(struct h_redis *r)
{
	char exe[PATH_MAX], log_path[PATH_MAX];
	int rc, n, attempt;

	memset(r, 0, sizeof(*r));
	rc = db_redis_server_path(exe, sizeof(exe));
	if (rc != 0) {
		fprintf(stderr, "harness: redis-server not found\n");
		return rc;
	}
	r->dir = h_tmpdir("redis");
	if (r->dir == NULL)
		return errno != 0 ? -errno : -EIO;
	rc = db_path(log_path, sizeof(log_path), r->dir, "redis.log");
	if (rc != 0)
		goto err_dir;
	for (attempt = 0; attempt < DB_START_TRIES; attempt++) {
		rc = db_redis_try(r, exe, log_path);
		if (rc != -ECHILD)
			break;
	}
	if (rc != 0)
		goto err_dir;
	n = snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
	if (n < 0 || (size_t)n >= sizeof(r->url)) {
		rc = -ENAMETOOLONG;
		goto err_proc;
	}
	return 0;

err_proc:
	h_proc_stop(&r->proc, SIGKILL, DB_STOP_MS);
err_dir:
	h_rmtree(r->dir);
	free(r->dir);
	r->dir = NULL;
	r->port = 0;
	return rc;
}

void
h_redis_stop(struct h_redis *r)
{
	if (r == NULL)
		return;
	if (r->proc.pid > 0)
		h_proc_stop(&r->proc, SIGTERM, DB_STOP_MS);
	r->proc.pid = 0;
	if (r->dir != NULL) {
		h_rmtree(r->dir);
		free(r->dir);
		r->dir = NULL;
	}
	r->port = 0;
	r->url[0] = '\0';
}

/* ---- postgres ---- */

static uid_t db_chown_uid;
static gid_t db_chown_gid;

static int
db_chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (lchown(path, db_chown_uid, db_chown_gid) != 0)
		return -errno;
	return 0;
}

/* When root, hands the folder to the postgres system user (PostgreSQL
 * refuses to run as root).  *ret_user is the run_as for h_proc_start. */
static int
db_pg_owner(const char *dir, const char **ret_user)
{
	struct passwd *pw;
	int rc;

	if (geteuid() != 0) {
		*ret_user = NULL;
		return 0;
	}
	pw = getpwnam(DB_PG_SYSTEM_USER);
	if (pw == NULL) {
		fprintf(stderr,
		    "harness: running as root but there is no "
		    "'%s' user to run PostgreSQL\n",
		    DB_PG_SYSTEM_USER);
		return -ENOENT;
	}
	db_chown_uid = pw->pw_uid;
	db_chown_gid = pw->pw_gid;
	rc = nftw(dir, db_chown_one, 16, FTW_PHYS);
	if (rc != 0)
		return rc < 0 ? rc : -EIO;
	*ret_user = DB_PG_SYSTEM_USER;
	return 0;
}

/* Builds a libpq URL for database db on pg's port. */
static int
db_pg_url(const struct h_pg *pg, const char *db, char *buf, size_t len)
{
	int n;

	n = snprintf(buf, len, "postgresql://%s@127.0.0.1:%d/%s", DB_PG_USER,
	    pg->port, db);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* Runs initdb as a child and waits for it to finish. */
static int
db_pg_initdb(struct h_pg *pg, const char *bindir, const char *run_as)
{
	char exe[PATH_MAX], data[PATH_MAX], log_path[PATH_MAX];
	char version[PATH_MAX];
	struct hproc p;
	int rc;

	if (db_path(exe, sizeof(exe), bindir, "initdb") != 0 ||
	    db_path(data, sizeof(data), pg->dir, "data") != 0 ||
	    db_path(log_path, sizeof(log_path), pg->dir, "initdb.log") != 0 ||
	    db_path(version, sizeof(version), data, "PG_VERSION") != 0)
		return -ENAMETOOLONG;

	{
		char *const argv[] = {exe, "-D", data, "-U", DB_PG_USER,
		    "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
		    "--no-instructions", NULL};

		memset(&p, 0, sizeof(p));
		rc = h_proc_start(&p, "initdb", argv, NULL, log_path, run_as);
	}
	if (rc != 0)
		return rc;
	/* Signal 0: only wait for it to finish (killed past the deadline). */
	rc = h_proc_stop(&p, 0, DB_PG_INITDB_MS);
	if (rc < 0 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
		db_dump_log("initdb", log_path);
		return rc < 0 ? rc : -EIO;
	}
	if (access(version, F_OK) != 0) {
		db_dump_log("initdb", log_path);
		return -EIO;
	}
	return 0;
}

/* Starts the postgres server on the existing data folder and waits until it
 * accepts connections to database db. */
static int
db_pg_run(struct h_pg *pg, const char *db)
{
	char bindir[PATH_MAX], exe[PATH_MAX], data[PATH_MAX], sock[PATH_MAX];
	char log_path[PATH_MAX], port_s[16], url[256];
	const char *run_as = NULL;
	long long deadline;
	PGPing ping;
	int rc;

	rc = db_pg_bindir(bindir, sizeof(bindir));
	if (rc != 0)
		return rc;
	if (db_path(exe, sizeof(exe), bindir, "postgres") != 0 ||
	    db_path(data, sizeof(data), pg->dir, "data") != 0 ||
	    db_path(sock, sizeof(sock), pg->dir, "sock") != 0 ||
	    db_path(log_path, sizeof(log_path), pg->dir, "postgres.log") != 0)
		return -ENAMETOOLONG;
	rc = db_pg_url(pg, db, url, sizeof(url));
	if (rc != 0)
		return rc;
	if (geteuid() == 0)
		run_as = DB_PG_SYSTEM_USER;
	snprintf(port_s, sizeof(port_s), "%d", pg->port);

	{
		char *const argv[] = {exe, "-D", data, "-p", port_s, "-k", sock,
		    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
		    "synchronous_commit=off", "-c", "full_page_writes=off",
		    "-c", "max_connections=50", "-c", "shared_buffers=16MB",
		    NULL};

		memset(&pg->proc, 0, sizeof(pg->proc));
		rc = h_proc_start(
		    &pg->proc, "postgres", argv, NULL, log_path, run_as);
	}
	if (rc != 0)
		return rc;

	deadline = db_now_ms() + DB_PG_START_MS;
	for (;;) {
		ping = PQping(url);
		if (ping == PQPING_OK)
			return 0;
		if (ping == PQPING_NO_ATTEMPT) {
			rc = -EINVAL;
			break;
		}
		if (!h_proc_alive(&pg->proc)) {
			rc = -ECHILD;
			break;
		}
		if (db_now_ms() > deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		db_pause();
	}
	db_dump_log("postgres", log_path);
	h_proc_stop(&pg->proc, SIGKILL, DB_STOP_MS);
	pg->proc.pid = 0;
	return rc;
}

static int
db_pg_create_db(const struct h_pg *pg)
{
	char url[256];
	PGconn *conn;
	PGresult *res;
	int rc = 0;

	rc = db_pg_url(pg, "postgres", url, sizeof(url));
	if (rc != 0)
		return rc;
	conn = PQconnectdb(url);
	if (conn == NULL)
		return -ENOMEM;
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "harness: postgres connect: %s",
		    PQerrorMessage(conn));
		rc = -ECONNREFUSED;
		goto out_conn;
	}
	res = PQexec(conn, "CREATE DATABASE " DB_PG_DB);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fprintf(stderr, "harness: CREATE DATABASE: %s",
		    PQerrorMessage(conn));
		rc = -EIO;
	}
	PQclear(res);
out_conn:
	PQfinish(conn);
	return rc;
}

int
h_pg_start(struct h_pg *pg)
{
	char bindir[PATH_MAX], sock[PATH_MAX], path[PATH_MAX];
	const char *run_as = NULL;
	int rc, attempt;

	memset(pg, 0, sizeof(*pg));
	rc = db_pg_bindir(bindir, sizeof(bindir));
	if (rc != 0) {
		fprintf(stderr,
		    "harness: PostgreSQL binaries not found (set "
		    "%s)\n",
		    DB_PG_BINDIR_ENV);
		return rc;
	}
	pg->dir = h_tmpdir("pg");
	if (pg->dir == NULL)
		return errno != 0 ? -errno : -EIO;
	rc = db_path(sock, sizeof(sock), pg->dir, "sock");
	if (rc != 0)
		goto err_dir;
	if (mkdir(sock, 0700) != 0) {
		rc = -errno;
		goto err_dir;
	}
	/* The children append to these; create them before handing the
	 * folder over so that whoever opens them may write. */
	if (db_path(path, sizeof(path), pg->dir, "initdb.log") != 0 ||
	    db_touch(path) != 0 ||
	    db_path(path, sizeof(path), pg->dir, "postgres.log") != 0 ||
	    db_touch(path) != 0) {
		rc = -EIO;
		goto err_dir;
	}
	rc = db_pg_owner(pg->dir, &run_as);
	if (rc != 0)
		goto err_dir;
	rc = db_pg_initdb(pg, bindir, run_as);
	if (rc != 0)
		goto err_dir;

	/* A port taken between h_free_port() and the bind: try another. */
	for (attempt = 0; attempt < DB_START_TRIES; attempt++) {
		pg->port = h_free_port();
		if (pg->port <= 0) {
			rc = pg->port < 0 ? pg->port : -EADDRNOTAVAIL;
			goto err_dir;
		}
		rc = db_pg_run(pg, "postgres");
		if (rc != -ECHILD)
			break;
	}
	if (rc != 0)
		goto err_dir;
	rc = db_pg_create_db(pg);
	if (rc != 0)
		goto err_proc;
	rc = db_pg_url(pg, DB_PG_DB, pg->url, sizeof(pg->url));
	if (rc != 0)
		goto err_proc;
	return 0;

err_proc:
	h_proc_stop(&pg->proc, SIGKILL, DB_STOP_MS);
	pg->proc.pid = 0;
err_dir:
	h_rmtree(pg->dir);
	free(pg->dir);
	pg->dir = NULL;
	pg->port = 0;
	return rc;
}

int
h_pg_halt(struct h_pg *pg)
{
	int rc;

	if (pg->proc.pid <= 0)
		return -ESRCH;
	/* SIGINT: fast shutdown, a clean checkpoint, data kept. */
	rc = h_proc_stop(&pg->proc, SIGINT, DB_STOP_MS);
	pg->proc.pid = 0;
	return rc < 0 ? rc : 0;
}

int
h_pg_restart(struct h_pg *pg)
{
	if (pg->dir == NULL || pg->port <= 0)
		return -EINVAL;
	if (pg->proc.pid > 0)
		return -EBUSY;
	return db_pg_run(pg, DB_PG_DB);
}

void
h_pg_stop(struct h_pg *pg)
{
	if (pg == NULL)
		return;
	if (pg->proc.pid > 0)
		h_pg_halt(pg);
	if (pg->dir != NULL) {
		h_rmtree(pg->dir);
		free(pg->dir);
		pg->dir = NULL;
	}
	pg->port = 0;
	pg->url[0] = '\0';
}
