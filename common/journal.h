/*
 * journal: a durable, append-only log of records numbered 1, 2, 3...,
 * kept by a producer (a provider-worker's usage events) until a consumer
 * (the accountant) has them in its database.
 *
 * On disk, in one folder:
 *   epoch                16 hex chars made when the journal is created; a
 *                        journal folder made anew gets a new epoch, so its
 *                        sequence numbers are never confused with an old one
 *   seg-<first seq>.log  segments (first seq in 20 digits), each a run of
 *                        records [u32 len][u32 crc32c(seq, data)][u64 seq]
 *                        [data], little-endian
 * Sequence numbers survive restarts: journal_open() scans the segments and
 * carries on after the last whole record.  A torn or corrupt tail of the
 * last segment (a crash during a write) is cut off; damage anywhere else
 * refuses to open (-EBADMSG) rather than renumber or drop records.
 *
 * Writes are made durable in group commits: journal_sync() waits for one
 * fdatasync() that covers every record written so far, shared by all the
 * threads waiting at that moment.  After a failed write or sync the
 * journal refuses appends (-EIO) until journal_check() repaired it
 * (records not yet durable are cut off: they were never reported durable).
 * The whole journal is bounded by max_bytes: beyond it appends fail with
 * -ENOSPC until journal_trim() frees segments.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef AIPROXY_JOURNAL_H
#define AIPROXY_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_RECORD_MAX            (64 * 1024) /* data bytes, 1..this */
#define JOURNAL_SEGMENT_BYTES_DEFAULT (4u << 20)
#define JOURNAL_MAX_BYTES_DEFAULT     (1024ull << 20)
#define JOURNAL_EPOCH_LEN             16

struct journal_opts {
	size_t segment_bytes; /* a segment is closed past this; 0: default */
	uint64_t max_bytes;   /* all segments together; 0: default */
};

struct journal;

/* Opens (creating when missing, with parents) the journal in dir.  o may be
 * NULL.  -EBADMSG: damaged beyond its tail.  Caller frees with
 * journal_close(). */
int journal_open(
    const char *dir, const struct journal_opts *o, struct journal **ret);
/* Flushes nothing more (every durable record already is) and frees j.
 * Accepts NULL. */
void journal_close(struct journal *j);

/* The epoch (JOURNAL_EPOCH_LEN hex chars), borrowed from j. */
const char *journal_epoch(const struct journal *j);

/*
 * Writes one record (len 1..JOURNAL_RECORD_MAX) and sets *ret_seq to its
 * number, last_seq + 1.  Not durable yet: see journal_sync().  -EIO when the
 * journal is broken, -ENOSPC when full (max_bytes), -errno of the write
 * (nothing of the record stays in the file then).
 */
int journal_write(
    struct journal *j, const void *buf, size_t len, int64_t *ret_seq);
/* Waits until every record up to seq is on disk (group commit).  -EIO
 * when the sync failed: the journal is broken until journal_check(). */
int journal_sync(struct journal *j, int64_t seq);
/* journal_write() + journal_sync(). */
int journal_append(
    struct journal *j, const void *buf, size_t len, int64_t *ret_seq);

/* Highest record number written, durable, and the lowest still kept
 * (last + 1 when the journal holds no record). */
int64_t journal_last_seq(struct journal *j);
int64_t journal_durable_seq(struct journal *j);
int64_t journal_first_seq(struct journal *j);
/* Bytes in all segments. */
uint64_t journal_bytes(struct journal *j);
/* false after a failed write or sync, until journal_check() repairs. */
bool journal_healthy(struct journal *j);
/* Repairs a broken journal (cuts records not yet durable, syncs) and says
 * whether an append could succeed now: 0, -ENOSPC (still no room for the
 * last record refused for room) or -errno (a probe write in the folder
 * failed). */
int journal_check(struct journal *j);

/*
 * Calls fn for each durable record with seq >= from, in order, at most max
 * records (0: no limit); stops early when fn returns non-zero (that value is
 * returned).  buf is valid only during the call.  Records already trimmed
 * are skipped (the first one seen may be > from).
 */
typedef int (*journal_read_fn)(
    void *arg, int64_t seq, const void *buf, size_t len);
int journal_read_from(
    struct journal *j, int64_t from, size_t max, journal_read_fn fn, void *arg);

/* Deletes the segments whose records are all <= upto.  When every record
 * is <= upto, the segment being written is closed and deleted too if it
 * holds a quarter of segment_bytes or more, or an append was refused for
 * room.  Returns the number of segments deleted, or -errno. */
int journal_trim(struct journal *j, int64_t upto);

#endif
