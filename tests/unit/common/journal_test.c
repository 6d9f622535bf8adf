/*
 * journal_test: the producer-side usage journal (common/journal.c):
 * numbering, durability across reopen, segments and trimming, a torn tail
 * cut safely, damage refused, the size bound, a failed write leaving
 * nothing behind, and concurrent appenders sharing group commits.
 */
#include "journal.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit_common.h"

static Suite *journal_suite(void);

#define JT_THREADS     4
#define JT_PER_THREAD  400
#define JT_SEG_SMALL   256
#define JT_RECORDS_MAX 4096

static char jt_root[PATH_MAX];
static int jt_dirs;

/* A fresh folder under a per-test root (removed by the fork's exit). */
static void
jt_dir(char *out, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	int n;

	if (jt_root[0] == '\0') {
		n = snprintf(jt_root, sizeof(jt_root), "%s/aiproxy-jt-XXXXXX",
		    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
		ck_assert_int_lt(n, (int)sizeof(jt_root));
		ck_assert_ptr_nonnull(mkdtemp(jt_root));
	}
	n = snprintf(out, len, "%s/j%d/nested", jt_root, jt_dirs++);
	ck_assert_int_lt(n, (int)len);
}

static int
jt_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static void
jt_rm_root(void)
{
	if (jt_root[0] == '\0')
		return;
	ck_assert_int_eq(nftw(jt_root, jt_rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
	jt_root[0] = '\0';
}

static void
jt_record(char *buf, size_t len, int64_t tag)
{
	snprintf(buf, len, "record-%lld-%s", (long long)tag,
	    tag % 3 == 0 ? "with a longer body to vary the sizes" : "x");
}

struct jt_seen {
	int64_t seqs[JT_RECORDS_MAX];
	char first_data[128];
	size_t n;
	size_t stop_after;
};

static int
jt_collect(void *arg, int64_t seq, const void *buf, size_t len)
{
	struct jt_seen *s = arg;

	ck_assert_uint_lt(s->n, JT_RECORDS_MAX);
	if (s->n == 0) {
		ck_assert_uint_lt(len, sizeof(s->first_data));
		memcpy(s->first_data, buf, len);
		s->first_data[len] = '\0';
	}
	s->seqs[s->n++] = seq;
	return s->stop_after > 0 && s->n >= s->stop_after ? 7 : 0;
}

/* Appends records tagged from..to (their own seq when the journal is
 * fresh) and checks the numbers handed out. */
static void
jt_append_range(struct journal *j, int64_t from, int64_t to)
{
	char rec[128];
	int64_t seq;

	for (int64_t t = from; t <= to; t++) {
		jt_record(rec, sizeof(rec), t);
		ck_assert_int_eq(journal_append(j, rec, strlen(rec), &seq), 0);
		ck_assert_int_eq(seq, t);
	}
}

/* Every record from..to is read back, in order, with its content. */
static void
jt_check_contents(struct journal *j, int64_t from, int64_t to)
{
	struct jt_seen *s = calloc(1, sizeof(*s));
	char want[128];

	ck_assert_int_eq(journal_read_from(j, from, 0, jt_collect, s), 0);
	ck_assert_uint_eq(s->n, (size_t)(to - from + 1));
	for (size_t i = 0; i < s->n; i++)
		ck_assert_int_eq(s->seqs[i], from + (int64_t)i);
	jt_record(want, sizeof(want), from);
	ck_assert_str_eq(s->first_data, want);
	free(s);
}

/* Path of the segment file whose first record is first. */
static void
jt_seg_path(const char *dir, int64_t first, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/seg-%020lld.log", dir, (long long)first);

	ck_assert_int_lt(n, (int)len);
}

static off_t
jt_file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

START_TEST(test_numbers_and_reads)
{
	struct jt_seen *s = calloc(1, sizeof(*s));
	char dir[PATH_MAX];
	struct journal *j;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, NULL, &j), 0);
	ck_assert_int_eq(journal_last_seq(j), 0);
	ck_assert_int_eq(journal_first_seq(j), 1);
	ck_assert_int_eq(strlen(journal_epoch(j)), JOURNAL_EPOCH_LEN);
	jt_append_range(j, 1, 100);
	ck_assert_int_eq(journal_last_seq(j), 100);
	ck_assert_int_eq(journal_durable_seq(j), 100);
	jt_check_contents(j, 1, 100);
	jt_check_contents(j, 50, 100);

	/* max bounds the count, a non-zero callback result stops early. */
	ck_assert_int_eq(journal_read_from(j, 50, 10, jt_collect, s), 0);
	ck_assert_uint_eq(s->n, 10);
	ck_assert_int_eq(s->seqs[9], 59);
	memset(s, 0, sizeof(*s));
	s->stop_after = 3;
	ck_assert_int_eq(journal_read_from(j, 1, 0, jt_collect, s), 7);
	ck_assert_uint_eq(s->n, 3);
	memset(s, 0, sizeof(*s));
	ck_assert_int_eq(journal_read_from(j, 101, 0, jt_collect, s), 0);
	ck_assert_uint_eq(s->n, 0);

	/* Bad sizes are refused without consuming a number. */
	ck_assert_int_eq(journal_write(j, "", 0, &(int64_t){0}), -EINVAL);
	{
		char *big = calloc(1, JOURNAL_RECORD_MAX + 1);

		ck_assert_int_eq(journal_write(j, big, JOURNAL_RECORD_MAX + 1,
				     &(int64_t){0}),
		    -EINVAL);
		free(big);
	}
	ck_assert_int_eq(journal_sync(j, 101), -EINVAL);
	ck_assert_int_eq(journal_last_seq(j), 100);
	journal_close(j);
	free(s);
	jt_rm_root();
}
END_TEST

START_TEST(test_reopen_keeps_numbers_and_epoch)
{
	char dir[PATH_MAX], other[PATH_MAX], epoch[JOURNAL_EPOCH_LEN + 1];
	struct journal *j, *k;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, NULL, &j), 0);
	jt_append_range(j, 1, 10);
	snprintf(epoch, sizeof(epoch), "%s", journal_epoch(j));
	journal_close(j);

	ck_assert_int_eq(journal_open(dir, NULL, &j), 0);
	ck_assert_str_eq(journal_epoch(j), epoch);
	ck_assert_int_eq(journal_last_seq(j), 10);
	jt_append_range(j, 11, 12);
	jt_check_contents(j, 1, 12);

	/* Another folder is another journal: a new epoch. */
	jt_dir(other, sizeof(other));
	ck_assert_int_eq(journal_open(other, NULL, &k), 0);
	ck_assert_str_ne(journal_epoch(k), epoch);
	ck_assert_int_eq(journal_last_seq(k), 0);
	journal_close(k);
	journal_close(j);
	jt_rm_root();
}
END_TEST

START_TEST(test_segments_and_trim)
{
	struct journal_opts o = {.segment_bytes = JT_SEG_SMALL};
	struct jt_seen *s = calloc(1, sizeof(*s));
	char dir[PATH_MAX], path[PATH_MAX];
	struct journal *j;
	uint64_t before;
	int64_t first;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	jt_append_range(j, 1, 60);
	before = journal_bytes(j);
	/* Nothing is all <= 0. */
	ck_assert_int_eq(journal_trim(j, 0), 0);
	ck_assert_int_eq(journal_first_seq(j), 1);

	/* Only whole segments go: the one holding 25 stays. */
	ck_assert_int_gt(journal_trim(j, 25), 0);
	first = journal_first_seq(j);
	ck_assert_int_le(first, 26);
	ck_assert_int_gt(first, 1);
	ck_assert_uint_lt(journal_bytes(j), before);
	jt_seg_path(dir, 1, path, sizeof(path));
	ck_assert_int_ne(access(path, F_OK), 0);
	/* Reading from before the first kept record starts at it. */
	ck_assert_int_eq(journal_read_from(j, 1, 0, jt_collect, s), 0);
	ck_assert_int_eq(s->seqs[0], first);
	ck_assert_int_eq(s->seqs[s->n - 1], 60);

	/* Short of everything, the segment being written stays. */
	ck_assert_int_ge(journal_trim(j, 59), 0);
	ck_assert_int_gt(journal_bytes(j), 0);
	/* Everything: it goes too, the numbering carries on. */
	ck_assert_int_gt(journal_trim(j, 60), 0);
	ck_assert_int_eq(journal_bytes(j), 0);
	ck_assert_int_eq(journal_last_seq(j), 60);
	ck_assert_int_eq(journal_first_seq(j), 61);
	journal_close(j);

	/* The numbering survives a reopen of a trimmed journal. */
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	ck_assert_int_eq(journal_last_seq(j), 60);
	jt_append_range(j, 61, 70);
	memset(s, 0, sizeof(*s));
	ck_assert_int_eq(journal_read_from(j, 61, 0, jt_collect, s), 0);
	ck_assert_uint_eq(s->n, 10);
	journal_close(j);
	free(s);
	jt_rm_root();
}
END_TEST

/* Garbage after the last record, then a record with a bad checksum: both
 * are cut, the numbering carries on after the last good one. */
START_TEST(test_torn_tail_cut)
{
	struct journal_opts o = {.segment_bytes = 1 << 20};
	char dir[PATH_MAX], path[PATH_MAX];
	struct journal *j;
	off_t size;
	int fd;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	jt_append_range(j, 1, 5);
	journal_close(j);
	jt_seg_path(dir, 1, path, sizeof(path));
	size = jt_file_size(path);

	/* A torn write: half a header. */
	fd = open(path, O_WRONLY | O_APPEND);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "\x10\x00\x00\x00\xaa\xbb", 6), 6);
	close(fd);
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	ck_assert_int_eq(journal_last_seq(j), 5);
	ck_assert_int_eq(jt_file_size(path), size);
	jt_append_range(j, 6, 6);
	journal_close(j);

	/* A flipped byte in the last record's data. */
	size = jt_file_size(path);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "#", 1, size - 1), 1);
	close(fd);
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	ck_assert_int_eq(journal_last_seq(j), 5);
	jt_append_range(j, 6, 8);
	jt_check_contents(j, 1, 8);
	journal_close(j);
	jt_rm_root();
}
END_TEST

/* Damage in a closed segment is not a crash's torn tail: refuse. */
START_TEST(test_damage_refused)
{
	struct journal_opts o = {.segment_bytes = JT_SEG_SMALL};
	char dir[PATH_MAX], path[PATH_MAX];
	struct journal *j;
	int fd;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	jt_append_range(j, 1, 40);
	journal_close(j);
	jt_seg_path(dir, 1, path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "#", 1, 20), 1);
	close(fd);
	ck_assert_int_eq(journal_open(dir, &o, &j), -EBADMSG);

	/* A missing epoch beside segments is refused too. */
	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	jt_append_range(j, 1, 3);
	journal_close(j);
	ck_assert_int_lt(snprintf(path, sizeof(path), "%.*s/epoch",
			     (int)(sizeof(path) - 8), dir),
	    (int)sizeof(path));
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(journal_open(dir, &o, &j), -EBADMSG);
	jt_rm_root();
}
END_TEST

/* Full with many segments, and with one segment bigger than the bound. */
static const struct journal_opts jt_full_opts[] = {
    {.segment_bytes = JT_SEG_SMALL, .max_bytes = 8 * JT_SEG_SMALL},
    {.segment_bytes = 1 << 20, .max_bytes = 2048},
};

START_TEST(test_full_then_trimmed)
{
	struct journal_opts o = jt_full_opts[_i];
	char dir[PATH_MAX], rec[128];
	struct journal *j;
	int64_t seq = 0, last;
	int rv = 0;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	for (int i = 1; i <= 1000 && rv == 0; i++) {
		jt_record(rec, sizeof(rec), i);
		rv = journal_append(j, rec, strlen(rec), &seq);
	}
	ck_assert_int_eq(rv, -ENOSPC);
	last = journal_last_seq(j);
	ck_assert_int_gt(last, 10);
	ck_assert_uint_le(journal_bytes(j), o.max_bytes);
	ck_assert_int_eq(journal_check(j), -ENOSPC);
	/* Full is not broken: trimming makes room. */
	ck_assert(journal_healthy(j));
	ck_assert_int_gt(journal_trim(j, last), 0);
	ck_assert_int_eq(journal_check(j), 0);
	jt_record(rec, sizeof(rec), last + 1);
	ck_assert_int_eq(journal_append(j, rec, strlen(rec), &seq), 0);
	ck_assert_int_eq(seq, last + 1);
	journal_close(j);
	jt_rm_root();
}
END_TEST

/* A write the file system refuses (here: the file size limit) leaves no
 * piece of the record and consumes no number. */
START_TEST(test_failed_write_leaves_nothing)
{
	struct journal_opts o = {.segment_bytes = 1 << 20};
	char dir[PATH_MAX], path[PATH_MAX], rec[128];
	struct rlimit old, lim;
	struct journal *j;
	int64_t seq = 0;
	off_t size;

	signal(SIGXFSZ, SIG_IGN);
	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	jt_append_range(j, 1, 3);
	jt_seg_path(dir, 1, path, sizeof(path));
	size = jt_file_size(path);

	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 10;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	jt_record(rec, sizeof(rec), 4);
	ck_assert_int_eq(journal_append(j, rec, strlen(rec), &seq), -EFBIG);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_int_eq(jt_file_size(path), size);
	ck_assert_int_eq(journal_last_seq(j), 3);
	ck_assert(journal_healthy(j));

	jt_append_range(j, 4, 5);
	journal_close(j);
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	ck_assert_int_eq(journal_last_seq(j), 5);
	jt_check_contents(j, 1, 5);
	journal_close(j);
	jt_rm_root();
}
END_TEST

struct jt_writer {
	struct journal *j;
	int id;
	int64_t seqs[JT_PER_THREAD];
};

static void *
jt_writer_main(void *arg)
{
	struct jt_writer *w = arg;
	char rec[64];

	for (int i = 0; i < JT_PER_THREAD; i++) {
		snprintf(rec, sizeof(rec), "t%d-%d", w->id, i);
		if (journal_append(w->j, rec, strlen(rec), &w->seqs[i]) != 0)
			w->seqs[i] = -1;
	}
	return NULL;
}

struct jt_check {
	int next[JT_THREADS];
	int64_t expect;
	bool ok;
};

/* Records come back in seq order, and each thread's in its own order. */
static int
jt_check_record(void *arg, int64_t seq, const void *buf, size_t len)
{
	struct jt_check *c = arg;
	char rec[64], want[64];
	int t;

	if (seq != c->expect++ || len >= sizeof(rec)) {
		c->ok = false;
		return 1;
	}
	memcpy(rec, buf, len);
	rec[len] = '\0';
	t = rec[1] - '0';
	if (rec[0] != 't' || t < 0 || t >= JT_THREADS) {
		c->ok = false;
		return 1;
	}
	snprintf(want, sizeof(want), "t%d-%d", t, c->next[t]++);
	if (strcmp(rec, want) != 0)
		c->ok = false;
	return 0;
}

START_TEST(test_concurrent_appends)
{
	struct journal_opts o = {.segment_bytes = 4096};
	struct jt_writer *w = calloc(JT_THREADS, sizeof(*w));
	pthread_t th[JT_THREADS];
	struct jt_check c = {.expect = 1, .ok = true};
	char *seen = calloc(JT_THREADS * JT_PER_THREAD + 1, 1);
	char dir[PATH_MAX];
	struct journal *j;

	jt_dir(dir, sizeof(dir));
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	for (int i = 0; i < JT_THREADS; i++) {
		w[i].j = j;
		w[i].id = i;
		ck_assert_int_eq(
		    pthread_create(&th[i], NULL, jt_writer_main, &w[i]), 0);
	}
	for (int i = 0; i < JT_THREADS; i++)
		pthread_join(th[i], NULL);
	/* Every number handed out once. */
	for (int i = 0; i < JT_THREADS; i++)
		for (int k = 0; k < JT_PER_THREAD; k++) {
			int64_t s = w[i].seqs[k];

			ck_assert_int_ge(s, 1);
			ck_assert_int_le(s, JT_THREADS * JT_PER_THREAD);
			ck_assert_int_eq(seen[s], 0);
			seen[s] = 1;
			if (k > 0)
				ck_assert_int_gt(s, w[i].seqs[k - 1]);
		}
	ck_assert_int_eq(journal_durable_seq(j), JT_THREADS * JT_PER_THREAD);
	journal_close(j);
	ck_assert_int_eq(journal_open(dir, &o, &j), 0);
	ck_assert_int_eq(journal_read_from(j, 1, 0, jt_check_record, &c), 0);
	ck_assert(c.ok);
	ck_assert_int_eq(c.expect, JT_THREADS * JT_PER_THREAD + 1);
	journal_close(j);
	free(seen);
	free(w);
	jt_rm_root();
}
END_TEST

static Suite *
journal_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("journal");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_numbers_and_reads);
	tcase_add_test(tc, test_reopen_keeps_numbers_and_epoch);
	tcase_add_test(tc, test_segments_and_trim);
	tcase_add_test(tc, test_torn_tail_cut);
	tcase_add_test(tc, test_damage_refused);
	tcase_add_loop_test(tc, test_full_then_trimmed, 0,
	    (int)(sizeof(jt_full_opts) / sizeof(jt_full_opts[0])));
	tcase_add_test(tc, test_failed_write_leaves_nothing);
	tcase_add_test(tc, test_concurrent_appends);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(journal_suite());
}
