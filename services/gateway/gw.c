/*
 * The gateway's life cycle: start (model table, CORS list, sockets,
 * sweeper, HTTP), graceful stop, free.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "gw.h"
#include "log.h"

static void *
sweeper_main(void *arg)
{
	struct gw *gw = arg;
	struct timespec ts;

	pthread_mutex_lock(&gw->mtx);
	while (!gw->sweeper_stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 500 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&gw->sweeper_cond, &gw->mtx, &ts);
		if (gw->sweeper_stop)
			break;
		pthread_mutex_unlock(&gw->mtx);
		gw_chat_sweep(gw);
		pthread_mutex_lock(&gw->mtx);
	}
	pthread_mutex_unlock(&gw->mtx);
	return NULL;
}

int
gw_start(const struct cfg *cfg, struct gw **ret)
{
	struct gw *gw;
	char err[256];
	int rv;

	if ((gw = calloc(1, sizeof(*gw))) == NULL)
		return -ENOMEM;
	gw->cfg = cfg;
	pthread_mutex_init(&gw->mtx, NULL);
	pthread_cond_init(&gw->cond, NULL);
	pthread_cond_init(&gw->sweeper_cond, NULL);
	gw_limit_init(gw);
	if ((rv = models_load(
		 cfg->models_file, &gw->models, err, sizeof(err))) != 0) {
		log_error(NULL, "cannot load the model table",
		    LF_S("file", cfg->models_file), LF_S("error", err));
		goto fail;
	}
	if ((rv = gw_cors_new(cfg->cors_origins, &gw->cors)) != 0) {
		log_error(NULL, "AI_PROXY_CORS_ORIGINS is invalid");
		goto fail;
	}
	if ((rv = gw_limit_fallbacks(gw)) != 0)
		goto fail;
	gw->vcfg.models = gw->models;
	gw->vcfg.default_model = cfg->default_model;
	gw->vcfg.max_tokens = cfg->max_tokens;
	gw->vcfg.default_max_tokens = cfg->default_max_tokens;
	gw->vcfg.max_body_bytes = (size_t)cfg->max_body_bytes;
	if (cfg->default_model != NULL &&
	    models_lookup(gw->models, cfg->default_model) == NULL) {
		log_error(NULL, "DEFAULT_AI_MODEL is not in the model table",
		    LF_S("model", cfg->default_model));
		rv = -EINVAL;
		goto fail;
	}
	if ((rv = gw_providers_init(gw)) != 0 || (rv = gw_nng_start(gw)) != 0)
		goto fail;
	if ((rv = pthread_create(&gw->sweeper, NULL, sweeper_main, gw)) != 0) {
		rv = -rv;
		goto fail;
	}
	gw->sweeper_started = true;
	if ((rv = gw_http_start(gw)) != 0)
		goto fail;
	*ret = gw;
	return 0;
fail:
	gw_stop(gw, 0);
	gw_free(gw);
	return rv;
}

/* Waits until no request is live or the deadline passes. */
static bool
wait_idle(struct gw *gw, int ms)
{
	int64_t deadline = clock_mono_ms() + ms;
	struct timespec ts;
	bool idle;

	pthread_mutex_lock(&gw->mtx);
	while (gw->nlive > 0 && clock_mono_ms() < deadline) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&gw->cond, &gw->mtx, &ts);
	}
	idle = gw->nlive == 0;
	pthread_mutex_unlock(&gw->mtx);
	return idle;
}

/* Resumes every suspended connection so MHD can close it. */
static void
wake_all(struct gw *gw)
{
	struct gw_req *r;

	pthread_mutex_lock(&gw->mtx);
	for (r = gw->live; r != NULL; r = r->next) {
		pthread_mutex_lock(&r->mtx);
		if (r->is_stream && !r->finished && !r->aborted) {
			r->aborted = true;
			r->abort_reason = "shutting_down";
		}
		if (r->state == GW_RS_WAITING)
			gw_req_set_error_locked(r, 503, "shutting_down", NULL);
		gw_req_wake_locked(r);
		pthread_mutex_unlock(&r->mtx);
	}
	pthread_mutex_unlock(&gw->mtx);
}

void
gw_stop(struct gw *gw, int drain_ms)
{
	MHD_socket lsock = MHD_INVALID_SOCKET;

	if (gw == NULL || gw->stopping)
		return;
	gw->stopping = true;
	if (gw->mhd != NULL) {
		lsock = MHD_quiesce_daemon(gw->mhd);
		if (!wait_idle(gw, drain_ms))
			log_warn(NULL, "requests still in flight, failing them",
			    LF_I("requests", gw->nlive));
	}
	/* Fail the calls still waiting, end the streams. */
	gw_nng_close_calls(gw);
	if (gw->mhd != NULL) {
		wake_all(gw);
		wait_idle(gw, 1000);
		wake_all(gw);
		MHD_stop_daemon(gw->mhd);
		gw->mhd = NULL;
		if (lsock != MHD_INVALID_SOCKET)
			close(lsock);
	}
	if (gw->sweeper_started) {
		pthread_mutex_lock(&gw->mtx);
		gw->sweeper_stop = true;
		pthread_cond_signal(&gw->sweeper_cond);
		pthread_mutex_unlock(&gw->mtx);
		pthread_join(gw->sweeper, NULL);
		gw->sweeper_started = false;
	}
	gw_nng_stop(gw);
}

void
gw_free(struct gw *gw)
{
	if (gw == NULL)
		return;
	gw_limit_fini(gw);
	free(gw->fallback);
	models_free(gw->models);
	gw_cors_free(gw->cors);
	gw_providers_free(gw);
	pthread_cond_destroy(&gw->sweeper_cond);
	pthread_cond_destroy(&gw->cond);
	pthread_mutex_destroy(&gw->mtx);
	free(gw);
}
