"""Django settings, every value from the environment with a safe local default.

The README lists each variable. Local mode (no variables set) runs on SQLite under
``var/`` and a Redis on 127.0.0.1:6379, over plain HTTP.
"""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from config.database import SessionBounds, postgres_session_options

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()

# Off unless turned on: production that forgets DEBUG=0 must not serve tracebacks. `make run`
# (bin/run.py) and the test suite turn it on for local use.
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (production); for local use set DEBUG=1, as `make run` does."
        )
    SECRET_KEY = "insecure-local-development-key-never-use-in-production"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "tasks.monitoring.admin_apps.PlatformAdminConfig",  # django.contrib.admin with the platform status page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_celery_beat",
    "django_celery_results",
    "tasks",
    "marketplace",
    "ninja",  # the API docs page from its bundled Swagger UI (static files), not from a CDN
    # Test-only apps (a side-effect ledger for fault tests) come in through the environment.
    *env.list("EXTRA_INSTALLED_APPS", default=[]),
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# Unset DATABASE_URL means SQLite in var/. WAL lets readers run beside one writer, the busy
# timeout makes a second writer wait instead of failing, and IMMEDIATE transactions take
# the write lock at BEGIN, so the web process and a worker never deadlock on an upgrade
# from a read lock to a write lock.
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }
    # Test worker processes must open the same file as the test run, never ":memory:".
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# Lost hosts (config/database.py): bounds sent with every PostgreSQL connection, in seconds, 0 =
# not set. A worker host cut off mid-handler releases its row locks within about 45 s, and a
# task waiting on such a lock fails and retries instead of queueing behind it for hours.
DATABASE_SESSION_BOUNDS = SessionBounds(
    # Above the 40 s hard time limit: a healthy task is never idle in its transaction that long.
    idle_in_transaction_timeout=env.int("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", default=45),
    # Below the 35 s soft time limit: a waiting task fails cleanly (and retries) before it is
    # interrupted mid-wait, which would leave its statement to run when the lock clears.
    lock_timeout=env.int("DATABASE_LOCK_TIMEOUT", default=20),
    # TCP keepalives on both ends: a silent peer is dropped after 10 + 4 x 5 = 30 s.
    keepalives_idle=env.int("DATABASE_TCP_KEEPALIVES_IDLE", default=10),
    keepalives_interval=env.int("DATABASE_TCP_KEEPALIVES_INTERVAL", default=5),
    keepalives_count=env.int("DATABASE_TCP_KEEPALIVES_COUNT", default=4),
    # Data unacknowledged this long (a backend sending to a lost host) drops the connection.
    tcp_user_timeout=env.int("DATABASE_TCP_USER_TIMEOUT", default=30),
    # How often a running query checks that its client is still there (PostgreSQL 14+).
    client_connection_check_interval=env.int("DATABASE_CLIENT_CONNECTION_CHECK_INTERVAL", default=5),
    # A database server that does not answer fails a connection attempt after this long.
    connect_timeout=env.int("DATABASE_CONNECT_TIMEOUT", default=10),
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = postgres_session_options(
        DATABASES["default"].get("OPTIONS", {}), DATABASE_SESSION_BOUNDS
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# In local mode whitenoise serves straight from the apps, so no collectstatic is needed.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Email ----------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="marketplace@localhost")

# --- HTTPS (production behind a proxy) -------------------------------------------------
# Local mode is plain HTTP on 127.0.0.1, so secure-only cookies would break the admin login.
HTTPS = env.bool("HTTPS", default=False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    # Both bind more than this site (every subdomain; browsers' preload lists, for months after
    # a removal request), so the operator opts in; check --deploy is told that is deliberate.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SILENCED_SYSTEM_CHECKS = [
        *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]

# --- Celery ---------------------------------------------------------------------------
# Read by config/celery_app.py through namespace="CELERY"; reliability flags live there.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
# Celery's Django fixup closes the database connection before and after every task unless this
# is set; it then closes it every N tasks only, and tasks/worker_connections.py applies Django's
# own CONN_MAX_AGE and health checks around each task instead, as Django does around a request.
CELERY_DB_REUSE_MAX = 1000
# Scheduling (README "Scheduling"): one active Beat by a lease on the BeatHeartbeat row; a
# standby takes over BEAT_LOCK_TTL seconds after the active one stops renewing it.
CELERY_BEAT_SCHEDULER = "tasks.scheduling.scheduler:PlatformScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = env.int("CELERY_BEAT_MAX_LOOP_INTERVAL", default=1)
BEAT_LOCK_TTL = env.int("BEAT_LOCK_TTL", default=5)
# Task results older than this are deleted by the celery.backend_cleanup job (seconds).
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=7 * 24 * 3600)
CELERY_TIMEZONE = TIME_ZONE
# On Redis a message is "unacknowledged" from the moment a worker reserves it. With prefetch 1
# a reserved message can wait for one running task (up to the hard limit) and then run (up to
# the hard limit again), so twice the hard limit must stay below the visibility timeout: then
# a healthy task is never handed to a second worker, while a dead worker's messages come back
# within the visibility timeout (90 s by default, under the 2-minute recovery target).
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=35)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=40)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=90)
if not CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT or 2 * CELERY_TASK_TIME_LIMIT >= CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "Need CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT and "
        "2 * CELERY_TASK_TIME_LIMIT < CELERY_VISIBILITY_TIMEOUT."
    )
# The session bounds above must never cut healthy work short: a task's transaction may stay open
# up to the hard limit, and a lock wait must fail (and retry) before the soft limit interrupts it.
_idle, _lock = DATABASE_SESSION_BOUNDS.idle_in_transaction_timeout, DATABASE_SESSION_BOUNDS.lock_timeout
if (_idle and _idle <= CELERY_TASK_TIME_LIMIT) or (_lock and _lock >= CELERY_TASK_SOFT_TIME_LIMIT):
    raise ImproperlyConfigured(
        "Need DATABASE_IDLE_IN_TRANSACTION_TIMEOUT > CELERY_TASK_TIME_LIMIT and "
        "DATABASE_LOCK_TIMEOUT < CELERY_TASK_SOFT_TIME_LIMIT (or 0 to turn either off)."
    )
# Database outages (tasks/reliability/result_backend.py): a task's result or dead letter that
# cannot be written waits this many seconds for the database, then the task goes back to the
# queue. Its STARTED and its final write both may wait, so twice this stays below the soft limit
# (the default: 10 s, or a quarter of a shorter soft limit).
TASKS_DATABASE_WAIT = env.float("TASKS_DATABASE_WAIT", default=min(10.0, CELERY_TASK_SOFT_TIME_LIMIT / 4))
if not 0 < 2 * TASKS_DATABASE_WAIT < CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("Need 0 < 2 * TASKS_DATABASE_WAIT < CELERY_TASK_SOFT_TIME_LIMIT.")

# --- Platform: delivery, retries, outbox ---------------------------------------------------
# Exceptions (import paths) retried with backoff besides tasks.reliability.platform_task.TransientError.
TASKS_RETRY_FOR = env.list("TASKS_RETRY_FOR", default=["django.db.utils.OperationalError"])
TASKS_MAX_RETRIES = env.int("TASKS_MAX_RETRIES", default=5)
# Django's task API (django.tasks; the django-tasks backport on 5.2) on the platform's workers:
# ``@task`` functions in an app's ``tasks.py`` (which the workers import) run as platform jobs.
TASKS = {"default": {"BACKEND": "tasks.django_tasks.backend.PlatformTaskBackend"}}
# Backoff cap in seconds. It stays well below the visibility timeout: on Redis a worker holds a
# retry's ETA message unacknowledged, and one held longer than the timeout runs twice.
TASKS_RETRY_BACKOFF_MAX = env.int("TASKS_RETRY_BACKOFF_MAX", default=30)
# A delivery whose task started this many times without finishing (its worker died each time)
# is dead-lettered instead of run again.
DELIVERY_MAX_UNFINISHED_STARTS = env.int("DELIVERY_MAX_UNFINISHED_STARTS", default=3)
# Rolling deploys: a worker that does not know a delivery's message type or handler yet retries
# it with backoff for this many seconds after the delivery was recorded, then dead-letters it.
DELIVERY_DEPLOY_WINDOW = env.int("DELIVERY_DEPLOY_WINDOW", default=900)
# Deliveries not done this long after they were sent are sent again by the relay's sweeper.
DELIVERY_RESEND_AFTER = env.int("DELIVERY_RESEND_AFTER", default=CELERY_VISIBILITY_TIMEOUT + CELERY_TASK_TIME_LIMIT)
# Seconds a worker given SIGTERM waits for running tasks before giving them back to the queue;
# below the usual 30 s a process manager waits before SIGKILL.
WORKER_SHUTDOWN_GRACE = env.float("WORKER_SHUTDOWN_GRACE", default=20.0)
OUTBOX_RELAY_GRACE = env.float("OUTBOX_RELAY_GRACE", default=5.0)
OUTBOX_RELAY_BATCH = env.int("OUTBOX_RELAY_BATCH", default=500)
OUTBOX_RELAY_INTERVAL = env.float("OUTBOX_RELAY_INTERVAL", default=1.0)
# Delayed deliveries (run_after) the relay releases per pass, earliest first; a pass every
# OUTBOX_RELAY_INTERVAL seconds, so a delayed job starts within about a second of its due time.
DELAYED_RELEASE_BATCH = env.int("DELAYED_RELEASE_BATCH", default=500)
# Flow limits (tasks/reliability/flow_limits.py): how often a worker reads the admin's overrides
# (seconds), and how long a job waits when the rate counters' Redis does not answer (it waits in
# the database, it is not failed).
FLOW_LIMITS_REFRESH = env.float("FLOW_LIMITS_REFRESH", default=2.0)
FLOW_LIMITS_UNAVAILABLE_WAIT = env.float("FLOW_LIMITS_UNAVAILABLE_WAIT", default=5.0)
# Seconds after a cancel of a running job before the relay kills its worker process (the hard
# stop, tasks/reliability/hard_stop.py); 0, the default: only the cooperative cancel.
CANCEL_HARD_STOP_AFTER = env.float("CANCEL_HARD_STOP_AFTER", default=0.0)
# How often workers read the paused queues (seconds): a pause takes effect within about this.
QUEUE_PAUSE_POLL_SECONDS = env.float("QUEUE_PAUSE_POLL_SECONDS", default=1.0)
# The per-process publisher (tasks/messaging/publisher.py): how many deliveries it may hold
# before commits go straight to the relay, how long it stops trying after a failed send, and
# how long an exiting process waits for it.
OUTBOX_PUBLISHER_QUEUE_LIMIT = env.int("OUTBOX_PUBLISHER_QUEUE_LIMIT", default=10_000)
OUTBOX_PUBLISHER_BACKOFF_MAX = env.float("OUTBOX_PUBLISHER_BACKOFF_MAX", default=5.0)
OUTBOX_PUBLISHER_EXIT_WAIT = env.float("OUTBOX_PUBLISHER_EXIT_WAIT", default=5.0)
# Sent outbox rows are kept this many days, then deleted by the prune_sent_outbox job.
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)

# --- Re-sending what the broker lost, relay failures, delivery retention (issue 14) ----------
# On Redis the sweeper looks for deliveries not done this many seconds after they were sent, at
# most every DELIVERY_LOST_CHECK_INTERVAL seconds, and re-sends those absent from the broker in
# two looks DELIVERY_LOST_CONFIRM_AFTER seconds apart: a message lost in kombu's pop-to-unacked
# gap runs again within 2 minutes. (On RabbitMQ it counts, after DELIVERY_RESEND_AFTER.)
DELIVERY_LOST_CHECK_AFTER = env.int("DELIVERY_LOST_CHECK_AFTER", default=30)
DELIVERY_LOST_CHECK_INTERVAL = env.float("DELIVERY_LOST_CHECK_INTERVAL", default=10.0)
DELIVERY_LOST_CONFIRM_AFTER = env.float("DELIVERY_LOST_CONFIRM_AFTER", default=3.0)
# A Redis queue longer than this is not read by the sweep (a backlog; read once it drains).
DELIVERY_LOST_SCAN_MAX = env.int("DELIVERY_LOST_SCAN_MAX", default=20000)
if DELIVERY_LOST_CHECK_AFTER + DELIVERY_LOST_CHECK_INTERVAL + DELIVERY_LOST_CONFIRM_AFTER >= 110:
    raise ImproperlyConfigured(
        "DELIVERY_LOST_CHECK_AFTER + DELIVERY_LOST_CHECK_INTERVAL + DELIVERY_LOST_CONFIRM_AFTER must stay "
        "under 110 s: a message lost in a worker's kill must run again within 2 minutes."
    )
# A row that fails alone this many times (an outbox row the relay cannot plan, a delivery whose
# predicate raises or that the broker refuses for itself) becomes a dead letter with its error.
RELAY_ROW_MAX_FAILURES = env.int("RELAY_ROW_MAX_FAILURES", default=TASKS_MAX_RETRIES)
# The idempotency window: done Delivery rows are kept this many days, then pruned by the
# prune_deliveries job. A copy of a delivery arriving after its row is gone would run again, so
# the window must outlast anything that can still deliver a copy: re-sends, Redis restores
# (visibility timeout), retries, a rolling deploy, and the sent outbox rows that made them.
DELIVERY_RETENTION_DAYS = env.int("DELIVERY_RETENTION_DAYS", default=14)
_REDELIVERY_HORIZON = max(DELIVERY_RESEND_AFTER, CELERY_VISIBILITY_TIMEOUT, 24 * 3600)
if DELIVERY_RETENTION_DAYS * 86400 <= _REDELIVERY_HORIZON or DELIVERY_RETENTION_DAYS < OUTBOX_RETENTION_DAYS:
    raise ImproperlyConfigured(
        "DELIVERY_RETENTION_DAYS (the idempotency window) must exceed a day, the re-send and "
        "visibility horizons, and OUTBOX_RETENTION_DAYS."
    )

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- JSON API (README "API") -------------------------------------------------------------
# Request bodies above this are refused (413) before they are read. Room for the largest source
# the services accept (256 KiB) even when JSON escapes every character as \uXXXX.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
# Writes per token (anonymous downloads: per client address), django-ratelimit's "N/s|m|h|d".
API_WRITE_RATE_LIMIT = env.str("API_WRITE_RATE_LIMIT", default="60/m")
# Anonymous writes are counted per client address. Behind N proxies that each append their
# peer's address to X-Forwarded-For, the client is the N-th entry from the right; entries left
# of it come from the client and can be forged. 0 (the default): no proxy is trusted and the
# connection's own address counts. Set it to the exact number of proxies in front of gunicorn.
API_TRUSTED_PROXY_HOPS = env.int("API_TRUSTED_PROXY_HOPS", default=0)
if API_TRUSTED_PROXY_HOPS < 0:
    raise ImproperlyConfigured("API_TRUSTED_PROXY_HOPS must be 0 or more.")
# An API token expires at most this many days after it is issued (admin, issue_token, model).
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=90)
if API_TOKEN_MAX_DAYS < 1:
    raise ImproperlyConfigured("API_TOKEN_MAX_DAYS must be 1 or more.")
# The counters must be shared by every web process, so they live in Redis: RATELIMIT_REDIS_URL,
# else the broker's Redis on database 1. With RabbitMQ as broker and no RATELIMIT_REDIS_URL the
# counters fall back to each process's memory (the limit then applies per process).
_broker = urlsplit(CELERY_BROKER_URL)
RATELIMIT_REDIS_URL = env.str(
    "RATELIMIT_REDIS_URL",
    default=urlunsplit(_broker._replace(path="/1")) if _broker.scheme in ("redis", "rediss") else "",
)
CACHES["ratelimit"] = (
    {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": RATELIMIT_REDIS_URL,
        "KEY_PREFIX": "api",
        # A hung Redis must not hang API writes: after a second the limit fails open (logged).
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    if RATELIMIT_REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"}
)
RATELIMIT_USE_CACHE = "ratelimit"
# Job rate limits are counted in Redis too, shared by every worker: FLOW_LIMITS_REDIS_URL, else
# the API limits' Redis, else the local one (RabbitMQ as broker still needs a Redis for them).
FLOW_LIMITS_REDIS_URL = env.str("FLOW_LIMITS_REDIS_URL", default=RATELIMIT_REDIS_URL or "redis://127.0.0.1:6379/1")

# --- Monitoring (README "Monitoring") --------------------------------------------------
FLOWER_URL = env.str("FLOWER_URL", default=f"http://127.0.0.1:{env.int('FLOWER_PORT', default=5555)}/")
# Bearer token Prometheus sends to /metrics; empty means only staff sessions can read it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# The directory /metrics merges metric files from (and its subdirectories): the Procfile points
# each process's PROMETHEUS_MULTIPROC_DIR (prometheus_client's own variable) at it or below it.
PROMETHEUS_METRICS_DIR = Path(env.str("PROMETHEUS_METRICS_DIR", default=str(VAR_DIR / "prometheus")))
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=3.0)
HEALTH_WORKER_PING_TIMEOUT = env.float("HEALTH_WORKER_PING_TIMEOUT", default=1.0)
# Seconds /metrics keeps reporting a worker host that stopped answering as down (0), then drops it.
WORKER_FORGET_AFTER = env.int("WORKER_FORGET_AFTER", default=600)
HEALTH_BEAT_MAX_AGE = env.int("HEALTH_BEAT_MAX_AGE", default=60)
HEALTH_OUTBOX_MAX_AGE = env.int("HEALTH_OUTBOX_MAX_AGE", default=300)
HEALTH_QUEUE_MAX_AGE = env.int("HEALTH_QUEUE_MAX_AGE", default=300)
# Optional check: a queue with messages and no task started from it this long has stalled consumers.
HEALTH_QUEUE_STALLED_AFTER = env.int("HEALTH_QUEUE_STALLED_AFTER", default=600)
HEALTH_DEAD_LETTERS_MAX = env.int("HEALTH_DEAD_LETTERS_MAX", default=0)
# /health/ready reuses its report this many seconds per web process, and one refresh runs at a
# time: probes never queue up behind worker pings (tasks/monitoring/report_cache.py).
HEALTH_REPORT_CACHE_SECONDS = env.float("HEALTH_REPORT_CACHE_SECONDS", default=5.0)
STATUS_PAGE_REFRESH_SECONDS = env.int("STATUS_PAGE_REFRESH_SECONDS", default=15)
STATUS_INSPECT_TIMEOUT = env.float("STATUS_INSPECT_TIMEOUT", default=1.0)
STATUS_BROKER_TIMEOUT = env.float("STATUS_BROKER_TIMEOUT", default=2.5)

# --- Event streams for other services (issue 17, README "Consuming events from another service") ---
# The relay appends every committed event of a streamed Message class (``stream = "family.topic"``)
# to its stream's sink: STREAMS_SINKS names it per stream ("marketplace.components=rabbitmq,..."),
# the others go to STREAMS_DEFAULT_SINK (by default the broker's kind). Sinks: redis (Redis
# Streams), rabbitmq (a topic exchange per family).
STREAMS_DEFAULT_SINK = env.str(
    "STREAMS_DEFAULT_SINK", default="rabbitmq" if _broker.scheme.startswith("amqp") else "redis"
)
STREAMS_SINKS = env.dict("STREAMS_SINKS", default={})
if {STREAMS_DEFAULT_SINK, *STREAMS_SINKS.values()} - {"redis", "rabbitmq"}:
    raise ImproperlyConfigured("STREAMS_DEFAULT_SINK and STREAMS_SINKS values must be redis or rabbitmq.")
STREAMS_REDIS_URL = env.str(
    "STREAMS_REDIS_URL",
    default=CELERY_BROKER_URL if _broker.scheme in ("redis", "rediss") else "redis://127.0.0.1:6379/0",
)
STREAMS_RABBITMQ_URL = env.str(
    "STREAMS_RABBITMQ_URL",
    default=CELERY_BROKER_URL if _broker.scheme.startswith("amqp") else "amqp://guest:guest@127.0.0.1:5672//",
)
# Retention of a Redis stream: about this many entries (XADD MAXLEN ~), or, when
# STREAMS_REDIS_MAX_AGE (seconds) is set, entries about that young (XADD MINID ~) instead.
STREAMS_REDIS_MAXLEN = env.int("STREAMS_REDIS_MAXLEN", default=1_000_000)
STREAMS_REDIS_MAX_AGE = env.int("STREAMS_REDIS_MAX_AGE", default=0)
if STREAMS_REDIS_MAXLEN < 1 or STREAMS_REDIS_MAX_AGE < 0:
    raise ImproperlyConfigured("STREAMS_REDIS_MAXLEN must be 1 or more and STREAMS_REDIS_MAX_AGE 0 or more.")
# Entries the relay sequences or appends per batch, and how long appended entries are kept in the
# database (the outbox rows they came from are kept OUTBOX_RETENTION_DAYS).
STREAMS_BATCH = env.int("STREAMS_BATCH", default=500)
STREAMS_ENTRY_RETENTION_DAYS = env.int("STREAMS_ENTRY_RETENTION_DAYS", default=OUTBOX_RETENTION_DAYS)
# Consumer defaults (tasks/streams/consumer.py, manage.py stream_consume; each consumer may
# override them): entries pending longer than CLAIM_IDLE seconds are taken over from their
# consumer; one delivered MAX_DELIVERIES times without an ack is dead-lettered with its error;
# BATCH entries are read at once (RabbitMQ: the prefetch); a handled message_id is remembered
# SEEN_TTL seconds, so a copy within that window is acked without running the handler again.
STREAMS_CONSUMER_CLAIM_IDLE = env.float("STREAMS_CONSUMER_CLAIM_IDLE", default=30.0)
STREAMS_CONSUMER_MAX_DELIVERIES = env.int("STREAMS_CONSUMER_MAX_DELIVERIES", default=5)
STREAMS_CONSUMER_BATCH = env.int("STREAMS_CONSUMER_BATCH", default=10)
STREAMS_CONSUMER_SEEN_TTL = env.int("STREAMS_CONSUMER_SEEN_TTL", default=7 * 86400)
# A RabbitMQ consumer's queue: message TTL (ms, 0 = none; expired messages go to its DLQ), maximum
# priority (0 = none), and quorum instead of classic (replicated; then no maximum priority).
STREAMS_RABBITMQ_MESSAGE_TTL = env.int("STREAMS_RABBITMQ_MESSAGE_TTL", default=0)
STREAMS_RABBITMQ_MAX_PRIORITY = env.int("STREAMS_RABBITMQ_MAX_PRIORITY", default=0)
STREAMS_RABBITMQ_QUORUM = env.bool("STREAMS_RABBITMQ_QUORUM", default=False)
# A consumer group with work that acknowledged nothing this long fails the optional "streams" check.
STREAMS_STUCK_GROUP_MINUTES = env.float("STREAMS_STUCK_GROUP_MINUTES", default=10)
# RabbitMQ consumer queues (``<stream>.<group>``) shown on /metrics: AMQP cannot list queues.
STREAMS_RABBITMQ_WATCHED_QUEUES = env.list("STREAMS_RABBITMQ_WATCHED_QUEUES", default=[])

# RabbitMQ: the platform's queues are declared with x-max-priority (message priorities 0..9).
# 0 declares them without it, for a broker whose queues were declared so before (RabbitMQ
# refuses to redeclare a queue with other arguments; README "Priorities" has the upgrade).
TASK_QUEUE_MAX_PRIORITY = env.int("TASK_QUEUE_MAX_PRIORITY", default=9)
if not 0 <= TASK_QUEUE_MAX_PRIORITY <= 255:
    raise ImproperlyConfigured("TASK_QUEUE_MAX_PRIORITY must be between 0 and 255.")

# Seconds work may wait in a queue before it expires (a dead letter "expired" instead of a run):
# "low=3600,default=600"; a queue not named never expires its work. Deliveries count from their
# creation, other tasks from their publish.
try:
    QUEUE_EXPIRES = {queue: int(seconds) for queue, seconds in env.dict("QUEUE_EXPIRES", default={}).items()}
except ValueError as exc:
    raise ImproperlyConfigured(f"QUEUE_EXPIRES must read queue=seconds,...: {exc}") from exc
if any(seconds <= 0 for seconds in QUEUE_EXPIRES.values()):
    raise ImproperlyConfigured("QUEUE_EXPIRES values must be seconds above 0.")
# A periodic run expires a schedule period after its publish (unless the schedule sets its own
# expiry): a run that waited in the queue until the next was due is not run next to it.
SCHEDULE_RUNS_EXPIRE_AT_NEXT_DUE = env.bool("SCHEDULE_RUNS_EXPIRE_AT_NEXT_DUE", default=True)
# Schedule punctuality (tasks/scheduling/punctuality.py): the window its runs are judged over,
# and how long after its due time a run may be sent and still be on time (seconds).
SCHEDULE_PUNCTUALITY_WINDOW = env.int("SCHEDULE_PUNCTUALITY_WINDOW", default=6 * 3600)
SCHEDULE_LATE_AFTER = env.int("SCHEDULE_LATE_AFTER", default=30)

# LOG_FORMAT: "text" (readable, the default) or "json" (one object per line, for log shippers).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"task_context": {"()": "tasks.reliability.log_context.ContextFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s "
            "task_id=%(task_id)s message_id=%(message_id)s handler=%(handler)s"
        },
        "json": {"()": "tasks.reliability.json_log_formatter.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["task_context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
