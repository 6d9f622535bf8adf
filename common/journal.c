/*
 * journal: see journal.h.
 */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "ids.h"
#include "log.h"

#define J_HDR_LEN    16
#define J_SEG_PREFIX "seg-"
#define J_SEG_SUFFIX ".log"
#define J_SEG_DIGITS 20
#define J_EPOCH_FILE "epoch"
#define J_PROBE_FILE ".probe"
#define J_PROBE_LEN  4096
#define J_READ_BUF   (256 * 1024)

struct jseg {
	int64_t first;  /* seq of its first record (or of the next one) */
	uint64_t bytes; /* for the active segment: the write offset */
};

struct journal {
	char dir[PATH_MAX];
	char epoch[JOURNAL_EPOCH_LEN + 1];
	size_t segment_bytes;
	uint64_t max_bytes;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* a sync finished */
	struct jseg *segs; /* oldest first; segs[nseg - 1] is active */
	size_t nseg, capseg;
	int fd; /* the active segment, O_WRONLY */
	int64_t last_seq;
	int64_t durable_seq;
	uint64_t durable_off; /* of the active segment */
	uint64_t total;
	bool syncing;
	bool broken;
	uint64_t refused_len; /* the last record refused for lack of room */
	unsigned char *wbuf;  /* one record, under mu */

	/* Where the last read stopped, so the next one need not rescan. */
	int64_t hint_first, hint_seq;
	uint64_t hint_off;
};

/* ---- crc32c (Castagnoli), table driven ---- */

static uint32_t j_crc_table[256];
static pthread_once_t j_crc_once = PTHREAD_ONCE_INIT;

static void
j_crc_init(void)
{
	uint32_t c;
	int i, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		j_crc_table[i] = c;
	}
}

static uint32_t
j_crc(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len-- > 0)
		crc = j_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void
j_put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void
j_put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
j_get32(const unsigned char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t
j_get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* crc of a record: its seq (8 bytes LE) then its data. */
static uint32_t
j_record_crc(int64_t seq, const void *data, size_t len)
{
	unsigned char s[8];

	j_put64(s, (uint64_t)seq);
	return j_crc(j_crc(0, s, sizeof(s)), data, len);
}

/* ---- paths and small file helpers ---- */

static int
j_path(char *buf, size_t len, const char *dir, const char *leaf)
{
	int n = snprintf(buf, len, "%s/%s", dir, leaf);

	return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

static int
j_seg_path(const struct journal *j, int64_t first, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/" J_SEG_PREFIX "%020lld" J_SEG_SUFFIX,
	    j->dir, (long long)first);

	return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

/* "seg-<20 digits>.log" -> first seq; false for any other name. */
static bool
j_seg_name(const char *name, int64_t *ret_first)
{
	size_t plen = strlen(J_SEG_PREFIX);
	int64_t v = 0;
	int i;

	if (strlen(name) != plen + J_SEG_DIGITS + strlen(J_SEG_SUFFIX) ||
	    strncmp(name, J_SEG_PREFIX, plen) != 0 ||
	    strcmp(name + plen + J_SEG_DIGITS, J_SEG_SUFFIX) != 0)
		return false;
	for (i = 0; i < J_SEG_DIGITS; i++) {
		char c = name[plen + (size_t)i];

		if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (c - '0');
	}
	if (v < 1)
		return false;
	*ret_first = v;
	return true;
}

static int
j_fsync_dir(const char *dir)
{
	int fd, rv = 0;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if (fsync(fd) != 0)
		rv = -errno;
	close(fd);
	return rv;
}

static int
j_write_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;
	ssize_t w;

	while (len > 0) {
		w = pwrite(fd, p, len, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

static bool
j_is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
			(s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Reads dir/epoch into j->epoch; creates it when create is set and the
 * file is missing. */
static int
j_epoch_load(struct journal *j, bool create)
{
	char path[PATH_MAX], tmp[PATH_MAX], buf[64];
	unsigned char raw[JOURNAL_EPOCH_LEN / 2];
	ssize_t n;
	int fd, rv;

	if ((rv = j_path(path, sizeof(path), j->dir, J_EPOCH_FILE)) != 0)
		return rv;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < JOURNAL_EPOCH_LEN ||
		    !j_is_hex(buf, JOURNAL_EPOCH_LEN) ||
		    (n > JOURNAL_EPOCH_LEN &&
			!(n == JOURNAL_EPOCH_LEN + 1 &&
			    buf[JOURNAL_EPOCH_LEN] == '\n')))
			return -EBADMSG;
		memcpy(j->epoch, buf, JOURNAL_EPOCH_LEN);
		j->epoch[JOURNAL_EPOCH_LEN] = '\0';
		return 0;
	}
	if (errno != ENOENT)
		return -errno;
	if (!create)
		return -EBADMSG; /* segments without an epoch */
	if ((rv = id_random(raw, sizeof(raw))) != 0)
		return rv;
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(j->epoch + 2 * i, 3, "%02x", raw[i]);
	if ((rv = j_path(tmp, sizeof(tmp), j->dir, J_EPOCH_FILE ".tmp")) != 0)
		return rv;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%s\n", j->epoch);
	rv = j_write_all(fd, buf, (size_t)n, 0);
	if (rv == 0 && fsync(fd) != 0)
		rv = -errno;
	close(fd);
	if (rv == 0 && rename(tmp, path) != 0)
		rv = -errno;
	if (rv == 0)
		rv = j_fsync_dir(j->dir);
	return rv;
}

/* ---- a buffered sequential reader of one segment ---- */

struct jreader {
	int fd;
	uint64_t base; /* file offset of buf[0] */
	unsigned char *buf;
	size_t len, pos;
	bool eof;
};

static void
jreader_init(struct jreader *r, int fd, uint64_t off, unsigned char *buf)
{
	r->fd = fd;
	r->base = off;
	r->buf = buf;
	r->len = r->pos = 0;
	r->eof = false;
}

/* Makes n bytes available at buf + pos.  0, -ENODATA at end of file, or
 * -errno. */
static int
jreader_need(struct jreader *r, size_t n)
{
	ssize_t got;

	if (r->len - r->pos >= n)
		return 0;
	if (r->pos > 0) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->base += r->pos;
		r->len -= r->pos;
		r->pos = 0;
	}
	while (r->len < n && !r->eof) {
		got = pread(r->fd, r->buf + r->len, J_READ_BUF - r->len,
		    (off_t)(r->base + r->len));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			r->eof = true;
		r->len += (size_t)got;
	}
	return r->len >= n ? 0 : -ENODATA;
}

/*
 * The next record, which must be number want.  1 with *ret_* set (data
 * borrowed until the next call), 0 at a clean end of file, -EBADMSG for a
 * torn or damaged record (or an unexpected number), -errno.
 */
static int
jreader_next(struct jreader *r, int64_t want, const void **ret_data,
    size_t *ret_len, uint64_t *ret_off)
{
	const unsigned char *h;
	uint32_t len, crc;
	int64_t seq;
	int rv;

	if ((rv = jreader_need(r, 1)) == -ENODATA)
		return 0;
	if (rv != 0)
		return rv;
	if ((rv = jreader_need(r, J_HDR_LEN)) != 0)
		return rv == -ENODATA ? -EBADMSG : rv;
	h = r->buf + r->pos;
	len = j_get32(h);
	crc = j_get32(h + 4);
	seq = (int64_t)j_get64(h + 8);
	if (len < 1 || len > JOURNAL_RECORD_MAX || seq != want)
		return -EBADMSG;
	if ((rv = jreader_need(r, J_HDR_LEN + len)) != 0)
		return rv == -ENODATA ? -EBADMSG : rv;
	h = r->buf + r->pos;
	if (j_record_crc(seq, h + J_HDR_LEN, len) != crc)
		return -EBADMSG;
	*ret_data = h + J_HDR_LEN;
	*ret_len = len;
	*ret_off = r->base + r->pos;
	r->pos += J_HDR_LEN + len;
	return 1;
}

/* ---- open / recovery ---- */

static int
j_seg_push(struct journal *j, int64_t first, uint64_t bytes)
{
	struct jseg *n;
	size_t cap;

	if (j->nseg == j->capseg) {
		cap = j->capseg == 0 ? 16 : j->capseg * 2;
		if ((n = realloc(j->segs, cap * sizeof(*n))) == NULL)
			return -ENOMEM;
		j->segs = n;
		j->capseg = cap;
	}
	j->segs[j->nseg].first = first;
	j->segs[j->nseg].bytes = bytes;
	j->nseg++;
	return 0;
}

static int
j_seg_cmp(const void *a, const void *b)
{
	const struct jseg *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

static int
j_list_segments(struct journal *j)
{
	struct dirent *de;
	int64_t first;
	DIR *d;
	int rv = 0;

	if ((d = opendir(j->dir)) == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (!j_seg_name(de->d_name, &first))
			continue;
		if ((rv = j_seg_push(j, first, 0)) != 0)
			break;
	}
	closedir(d);
	if (rv == 0 && j->nseg > 1)
		qsort(j->segs, j->nseg, sizeof(*j->segs), j_seg_cmp);
	return rv;
}

/*
 * Checks segment i record by record.  Sets its byte count and *io_next to
 * the seq after its last record.  The last segment's torn tail is cut off;
 * damage elsewhere is -EBADMSG.
 */
static int
j_scan_segment(
    struct journal *j, size_t i, int64_t *io_next, unsigned char *buf)
{
	bool last = i + 1 == j->nseg;
	char path[PATH_MAX];
	struct jreader r;
	const void *data;
	uint64_t off, end = 0;
	struct stat st;
	size_t len;
	int fd, rv;

	if (j->segs[i].first != *io_next)
		return -EBADMSG;
	if ((rv = j_seg_path(j, j->segs[i].first, path, sizeof(path))) != 0)
		return rv;
	if ((fd = open(path, (last ? O_RDWR : O_RDONLY) | O_CLOEXEC)) < 0)
		return -errno;
	jreader_init(&r, fd, 0, buf);
	while ((rv = jreader_next(&r, *io_next, &data, &len, &off)) == 1) {
		end = off + J_HDR_LEN + len;
		(*io_next)++;
	}
	if (rv == 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size != end)
		rv = -EBADMSG; /* cannot happen: jreader saw the whole file */
	if (rv == -EBADMSG && last) {
		log_warn(NULL, "journal: cutting a torn tail",
		    LF_S("path", path), LF_I("offset", end),
		    LF_I("next_seq", *io_next));
		if (ftruncate(fd, (off_t)end) != 0 || fsync(fd) != 0)
			rv = -errno;
		else
			rv = 0;
	}
	close(fd);
	if (rv == -EBADMSG)
		log_error(NULL, "journal: damaged segment", LF_S("path", path),
		    LF_I("offset", end), LF_I("expected_seq", *io_next));
	if (rv != 0)
		return rv;
	j->segs[i].bytes = end;
	return 0;
}

static int
j_open_active(struct journal *j, bool create)
{
	char path[PATH_MAX];
	struct jseg *a = &j->segs[j->nseg - 1];
	int flags = O_WRONLY | O_CLOEXEC;
	int rv;

	if ((rv = j_seg_path(j, a->first, path, sizeof(path))) != 0)
		return rv;
	if (create)
		flags |= O_CREAT | O_TRUNC;
	if ((j->fd = open(path, flags, 0600)) < 0)
		return -errno;
	if (create)
		return j_fsync_dir(j->dir);
	return fdatasync(j->fd) == 0 ? 0 : -errno;
}

int
journal_open(
    const char *dir, const struct journal_opts *o, struct journal **ret)
{
	struct journal *j;
	unsigned char *rbuf = NULL;
	int64_t next = 0;
	size_t i;
	int n, rv;

	pthread_once(&j_crc_once, j_crc_init);
	if ((rv = daemon_mkdirs(dir)) != 0)
		return rv;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return -ENOMEM;
	j->fd = -1;
	n = snprintf(j->dir, sizeof(j->dir), "%s", dir);
	if (n < 0 || (size_t)n >= sizeof(j->dir) - 32) {
		rv = -ENAMETOOLONG;
		goto fail;
	}
	j->segment_bytes = o != NULL && o->segment_bytes > 0
			       ? o->segment_bytes
			       : JOURNAL_SEGMENT_BYTES_DEFAULT;
	j->max_bytes = o != NULL && o->max_bytes > 0
			   ? o->max_bytes
			   : JOURNAL_MAX_BYTES_DEFAULT;
	if ((j->wbuf = malloc(J_HDR_LEN + JOURNAL_RECORD_MAX)) == NULL ||
	    (rbuf = malloc(J_READ_BUF)) == NULL) {
		rv = -ENOMEM;
		goto fail;
	}
	if ((rv = j_list_segments(j)) != 0 ||
	    (rv = j_epoch_load(j, j->nseg == 0)) != 0)
		goto fail;
	if (j->nseg > 0)
		next = j->segs[0].first;
	for (i = 0; i < j->nseg; i++)
		if ((rv = j_scan_segment(j, i, &next, rbuf)) != 0)
			goto fail;
		else
			j->total += j->segs[i].bytes;
	if (j->nseg == 0) {
		if ((rv = j_seg_push(j, 1, 0)) != 0 ||
		    (rv = j_open_active(j, true)) != 0)
			goto fail;
		next = 1;
	} else if ((rv = j_open_active(j, false)) != 0) {
		goto fail;
	}
	j->last_seq = j->durable_seq = next - 1;
	j->durable_off = j->segs[j->nseg - 1].bytes;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	free(rbuf);
	*ret = j;
	return 0;
fail:
	if (rv == -EBADMSG)
		log_error(NULL, "journal: cannot be opened safely",
		    LF_S("path", dir));
	if (j->fd >= 0)
		close(j->fd);
	free(rbuf);
	free(j->wbuf);
	free(j->segs);
	free(j);
	return rv;
}

void
journal_close(struct journal *j)
{
	if (j == NULL)
		return;
	if (j->fd >= 0)
		close(j->fd);
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
	free(j->wbuf);
	free(j->segs);
	free(j);
}

const char *
journal_epoch(const struct journal *j)
{
	return j->epoch;
}

/* ---- writing ---- */

/* Closes the active segment (made durable first) and starts the next one.
 * Under mu, with no sync running. */
static int
j_rotate(struct journal *j)
{
	struct jseg *a = &j->segs[j->nseg - 1];
	int64_t first = j->last_seq + 1;
	int old = j->fd, rv;

	if (fdatasync(old) != 0) {
		rv = -errno;
		j->broken = true;
		return rv;
	}
	j->durable_seq = j->last_seq;
	j->durable_off = a->bytes;
	if ((rv = j_seg_push(j, first, 0)) != 0)
		return rv;
	if ((rv = j_open_active(j, true)) != 0) {
		char path[PATH_MAX];

		if (j->fd >= 0)
			close(j->fd);
		/* No empty segment may stay behind the records that keep
		 * going to the old one. */
		if (j_seg_path(j, first, path, sizeof(path)) == 0)
			unlink(path);
		j->nseg--;
		j->fd = old;
		return rv;
	}
	close(old);
	j->durable_off = 0;
	return 0;
}

int
journal_write(struct journal *j, const void *buf, size_t len, int64_t *ret_seq)
{
	uint64_t reclen = J_HDR_LEN + (uint64_t)len;
	struct jseg *a;
	int64_t seq;
	int rv;

	if (len < 1 || len > JOURNAL_RECORD_MAX || buf == NULL)
		return -EINVAL;
	pthread_mutex_lock(&j->mu);
	if (j->broken) {
		rv = -EIO;
		goto out;
	}
	if (j->total + reclen > j->max_bytes) {
		j->refused_len = reclen;
		rv = -ENOSPC;
		goto out;
	}
	a = &j->segs[j->nseg - 1];
	if (a->bytes > 0 && a->bytes + reclen > j->segment_bytes) {
		while (j->syncing)
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->broken) {
			rv = -EIO;
			goto out;
		}
		if ((rv = j_rotate(j)) != 0)
			goto out;
		a = &j->segs[j->nseg - 1];
	}
	seq = j->last_seq + 1;
	j_put32(j->wbuf, (uint32_t)len);
	j_put32(j->wbuf + 4, j_record_crc(seq, buf, len));
	j_put64(j->wbuf + 8, (uint64_t)seq);
	memcpy(j->wbuf + J_HDR_LEN, buf, len);
	if ((rv = j_write_all(j->fd, j->wbuf, reclen, (off_t)a->bytes)) != 0) {
		/* Leave no piece of the record behind. */
		if (ftruncate(j->fd, (off_t)a->bytes) != 0)
			j->broken = true;
		goto out;
	}
	a->bytes += reclen;
	j->total += reclen;
	j->last_seq = seq;
	j->refused_len = 0;
	*ret_seq = seq;
out:
	pthread_mutex_unlock(&j->mu);
	return rv;
}

int
journal_sync(struct journal *j, int64_t seq)
{
	int64_t target;
	uint64_t off;
	int fd, rv, err;

	pthread_mutex_lock(&j->mu);
	if (seq > j->last_seq) {
		pthread_mutex_unlock(&j->mu);
		return -EINVAL;
	}
	for (;;) {
		if (j->durable_seq >= seq) {
			rv = 0;
			break;
		}
		if (j->broken) {
			rv = -EIO;
			break;
		}
		if (j->syncing) {
			pthread_cond_wait(&j->cv, &j->mu);
			continue;
		}
		/* Lead one sync for everything written so far.  The active
		 * segment cannot change meanwhile: rotation waits for it. */
		j->syncing = true;
		target = j->last_seq;
		off = j->segs[j->nseg - 1].bytes;
		fd = j->fd;
		pthread_mutex_unlock(&j->mu);
		err = fdatasync(fd) == 0 ? 0 : errno;
		pthread_mutex_lock(&j->mu);
		j->syncing = false;
		if (err == 0) {
			if (target > j->durable_seq) {
				j->durable_seq = target;
				j->durable_off = off;
			}
		} else {
			log_error(NULL, "journal: fdatasync failed",
			    LF_S("path", j->dir), LF_S("error", strerror(err)));
			j->broken = true;
		}
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	return rv;
}

int
journal_append(struct journal *j, const void *buf, size_t len, int64_t *ret_seq)
{
	int64_t seq;
	int rv;

	if ((rv = journal_write(j, buf, len, &seq)) != 0)
		return rv;
	if ((rv = journal_sync(j, seq)) != 0)
		return rv;
	*ret_seq = seq;
	return 0;
}

int64_t
journal_last_seq(struct journal *j)
{
	int64_t v;

	pthread_mutex_lock(&j->mu);
	v = j->last_seq;
	pthread_mutex_unlock(&j->mu);
	return v;
}

int64_t
journal_durable_seq(struct journal *j)
{
	int64_t v;

	pthread_mutex_lock(&j->mu);
	v = j->durable_seq;
	pthread_mutex_unlock(&j->mu);
	return v;
}

int64_t
journal_first_seq(struct journal *j)
{
	int64_t v;

	pthread_mutex_lock(&j->mu);
	v = j->segs[0].first;
	pthread_mutex_unlock(&j->mu);
	return v;
}

uint64_t
journal_bytes(struct journal *j)
{
	uint64_t v;

	pthread_mutex_lock(&j->mu);
	v = j->total;
	pthread_mutex_unlock(&j->mu);
	return v;
}

bool
journal_healthy(struct journal *j)
{
	bool v;

	pthread_mutex_lock(&j->mu);
	v = !j->broken;
	pthread_mutex_unlock(&j->mu);
	return v;
}

/* Whether the folder takes a small synced write now (the disk is not full
 * or read-only). */
static int
j_probe(const struct journal *j)
{
	char path[PATH_MAX];
	static const char zeros[J_PROBE_LEN];
	int fd, rv;

	if ((rv = j_path(path, sizeof(path), j->dir, J_PROBE_FILE)) != 0)
		return rv;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rv = j_write_all(fd, zeros, sizeof(zeros), 0);
	if (rv == 0 && fdatasync(fd) != 0)
		rv = -errno;
	close(fd);
	unlink(path);
	return rv;
}

int
journal_check(struct journal *j)
{
	struct jseg *a;
	int rv = 0;

	pthread_mutex_lock(&j->mu);
	while (j->syncing)
		pthread_cond_wait(&j->cv, &j->mu);
	if (j->broken) {
		a = &j->segs[j->nseg - 1];
		if (ftruncate(j->fd, (off_t)j->durable_off) != 0 ||
		    fdatasync(j->fd) != 0) {
			rv = -errno;
			goto out;
		}
		j->total -= a->bytes - j->durable_off;
		a->bytes = j->durable_off;
		if (j->last_seq != j->durable_seq)
			log_warn(NULL,
			    "journal: records never made durable cut",
			    LF_S("path", j->dir),
			    LF_I("from_seq", j->durable_seq + 1),
			    LF_I("to_seq", j->last_seq));
		j->last_seq = j->durable_seq;
		j->broken = false;
	}
	if (j->total + (j->refused_len > 0 ? j->refused_len : J_HDR_LEN + 1) >
	    j->max_bytes) {
		rv = -ENOSPC;
		goto out;
	}
	rv = j_probe(j);
out:
	pthread_mutex_unlock(&j->mu);
	return rv;
}

/* ---- reading and trimming ---- */

int
journal_read_from(
    struct journal *j, int64_t from, size_t max, journal_read_fn fn, void *arg)
{
	struct jseg *segs = NULL;
	unsigned char *buf = NULL;
	char path[PATH_MAX];
	struct jreader r;
	const void *data;
	int64_t durable, next, hint_first, hint_seq;
	uint64_t hint_off, off, start;
	size_t nseg, i, len, count = 0;
	int fd, rv = 0;

	pthread_mutex_lock(&j->mu);
	nseg = j->nseg;
	segs = malloc(nseg * sizeof(*segs));
	if (segs != NULL)
		memcpy(segs, j->segs, nseg * sizeof(*segs));
	durable = j->durable_seq;
	hint_first = j->hint_first;
	hint_seq = j->hint_seq;
	hint_off = j->hint_off;
	pthread_mutex_unlock(&j->mu);
	if (segs == NULL || (buf = malloc(J_READ_BUF)) == NULL) {
		rv = -ENOMEM;
		goto out;
	}
	if (from < segs[0].first)
		from = segs[0].first;
	for (i = 0; i + 1 < nseg && segs[i + 1].first <= from; i++)
		;
	for (; i < nseg && from <= durable && rv == 0; i++) {
		if (segs[i].bytes == 0 && i + 1 < nseg)
			continue;
		if ((rv = j_seg_path(j, segs[i].first, path, sizeof(path))) !=
		    0)
			break;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			if (errno == ENOENT)
				continue; /* trimmed meanwhile */
			rv = -errno;
			break;
		}
		next = segs[i].first;
		start = 0;
		if (hint_first == segs[i].first && hint_seq > next &&
		    hint_seq <= from) {
			next = hint_seq;
			start = hint_off;
		}
		jreader_init(&r, fd, start, buf);
		while (next <= durable && rv == 0) {
			rv = jreader_next(&r, next, &data, &len, &off);
			if (rv == 0)
				break; /* end of this segment */
			if (rv < 0) {
				log_error(NULL, "journal: unreadable record",
				    LF_S("path", path), LF_I("seq", next),
				    LF_S("error", strerror(-rv)));
				break;
			}
			rv = 0;
			if (next >= from) {
				rv = fn(arg, next, data, len);
				count++;
				from = next + 1;
			}
			pthread_mutex_lock(&j->mu);
			j->hint_first = segs[i].first;
			j->hint_seq = next + 1;
			j->hint_off = off + J_HDR_LEN + len;
			pthread_mutex_unlock(&j->mu);
			next++;
			if (max > 0 && count >= max)
				break;
		}
		close(fd);
		if (max > 0 && count >= max)
			break;
	}
out:
	free(buf);
	free(segs);
	return rv;
}

int
journal_trim(struct journal *j, int64_t upto)
{
	char path[PATH_MAX];
	struct jseg *a;
	int n = 0, rv = 0;

	pthread_mutex_lock(&j->mu);
	/* Everything committed: the segment being written may go too once it
	 * holds a good part of a segment, or the journal ran full (else a
	 * journal smaller than two segments could never shrink). */
	a = &j->segs[j->nseg - 1];
	if (upto >= j->last_seq && a->bytes > 0 &&
	    (a->bytes >= j->segment_bytes / 4 || j->refused_len > 0)) {
		while (j->syncing)
			pthread_cond_wait(&j->cv, &j->mu);
		if (!j->broken && j->durable_seq == j->last_seq &&
		    upto >= j->last_seq)
			(void)j_rotate(j);
	}
	while (j->nseg > 1 && j->segs[1].first - 1 <= upto &&
	       j->segs[1].first - 1 <= j->durable_seq) {
		if ((rv = j_seg_path(
			 j, j->segs[0].first, path, sizeof(path))) != 0)
			break;
		if (unlink(path) != 0 && errno != ENOENT) {
			rv = -errno;
			log_error(NULL, "journal: cannot delete a segment",
			    LF_S("path", path), LF_S("error", strerror(errno)));
			break;
		}
		j->total -= j->segs[0].bytes;
		memmove(
		    &j->segs[0], &j->segs[1], (j->nseg - 1) * sizeof(*j->segs));
		j->nseg--;
		n++;
	}
	pthread_mutex_unlock(&j->mu);
	return rv != 0 ? rv : n;
}
