"""Settings: one pydantic-settings object read from `SERENA_*` environment variables.

Everything configurable lives here so a deployment is described by its environment
(`.env.example` documents each variable). Outside development and test the object
refuses the default secrets, so a production process cannot start with a key that is
printed in this file.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_WEBHOOK_SECRET = "whsec_dev_only_change_me"
DEV_STRIPE_KEY = "sk_test_dev_only"


class Env(StrEnum):
    DEVELOPMENT = "development"  # laptops and `make demo`: default secrets allowed
    TEST = "test"  # the test suite: default secrets allowed
    PRODUCTION = "production"  # everything else: real secrets required


def _check_url(value: str, schemes: tuple[str, ...], name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"{name} must start with one of {', '.join(s + '://' for s in schemes)}, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"{name} has no host: {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError as exc:
        raise ValueError(f"{name} has a bad port: {value!r}") from exc
    return value


class Settings(BaseSettings):
    """Every setting of the platform; env var = SERENA_ + the field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="SERENA_", env_file=".env", extra="ignore")

    env: Env = Env.DEVELOPMENT
    database_url: str = "postgresql://postgres@127.0.0.1:5432/serena"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "serena:"
    # The project's own Mosquitto (our config: per-driver ACLs, persistence), on its own port
    # so the machine's broker on 1883 keeps its configuration.
    mqtt_url: str = "mqtt://127.0.0.1:1884"
    mqtt_service_username: str = "serena-service"
    mqtt_service_password: str = "dev-only-mqtt-service-password"
    mqtt_topic_root: str = "serena/v1"
    mosquitto_dir: Path = Path("var/mosquitto")
    jwt_secret: str = DEV_JWT_SECRET
    jwt_access_ttl_s: int = Field(default=900, gt=0, le=86400)
    jwt_refresh_ttl_s: int = Field(default=30 * 86400, gt=0)
    login_max_failures: int = Field(default=5, gt=0)
    login_lockout_s: int = Field(default=300, gt=0)
    stripe_api_key: str = DEV_STRIPE_KEY
    stripe_api_base: str = "http://127.0.0.1:8420"
    stripe_webhook_secret: str = DEV_WEBHOOK_SECRET
    commerce_currency: str = "EUR"  # commerce: currency of a new cart when the client names none
    commerce_timezone: str = "Europe/Helsinki"  # commerce: local time of the delivery windows
    commerce_windows: str = "10-12,12-14,14-16,16-18,18-20"  # commerce: daily delivery windows, local hours
    commerce_window_days: int = Field(default=3, gt=0, le=14)  # commerce: days ahead offered at checkout
    commerce_window_cutoff_min: int = Field(default=60, ge=0)  # commerce: a window closes this long before it starts
    commerce_fee_per_km: str = "0.40"  # commerce: delivery fee per road km from the depot, in the zone's currency
    commerce_detour_factor: float = Field(default=1.35, ge=1.0)  # commerce: road km / straight km when no road graph is loaded
    commerce_graph: str = ""  # commerce: road graph for quote distances: OSM file, graph dir, "default" (bundled city), "" = estimate
    commerce_fx_rates: str = "SEK=11.40,NOK=11.70,DKK=7.46,USD=1.08,GBP=0.85"  # commerce: units per 1 EUR, for zone fees only
    commerce_loyalty_tiers: str = "silver:0:0:1:,gold:500:5:3:early_access,platinum:2000:15:5:free_delivery+early_access"  # commerce: name:min 12-month spend EUR:min orders:percent back:benefits
    commerce_point_value: str = "0.01"  # commerce: EUR value of one loyalty point when redeemed
    commerce_webhook_tolerance_s: int = Field(default=300, gt=0)  # commerce: oldest webhook signature timestamp accepted
    commerce_image_base_url: str = "/media/"  # commerce: public URL prefix of the object storage holding product images
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, gt=0, lt=65536)
    api_workers: int = Field(default=0, ge=0, le=64)  # API processes sharing the port; 0 = one per CPU core
    log_level: str = "INFO"
    log_json: bool = False
    data_dir: Path = Path("var")
    # --- tracking (GPS ingestion, live state, history, customer tracking; docs/tracking.md) ---
    dispatch_region: str = "default"  # region this planner plans (one leader per region, a lease in Redis)
    dispatch_graph: str = "default"  # road graph for plans: OSM file, graph dir, "default" (bundled Helsinki), "" = straight-line estimate
    dispatch_time_limit_s: float = Field(default=2.0, gt=0, le=60)  # budget of a full re-plan
    dispatch_max_churn: float = Field(default=0.2, ge=0, le=1)  # share of stops a re-optimisation may move to another van
    dispatch_wait_cost: float = Field(default=0.3, ge=0, le=100)  # metres of driving one second of a customer's wait is worth (0 = distance only)
    dispatch_loading_radius_m: float = Field(default=400.0, ge=0)  # a van this close to its depot (or empty) may be loading: its assigned parcels stay on it
    dispatch_replan_interval_s: float = Field(default=60.0, gt=0)  # re-plan at least this often (ETA drift)
    dispatch_insert_interval_s: float = Field(default=0.25, ge=0, le=10)  # new jobs are inserted at most this often (a burst goes in together)
    dispatch_geofence_radius_m: float = Field(default=75.0, gt=0)  # a delivery scan within this of the drop-off counts as at the door
    dispatch_eta_drift_s: float = Field(default=600.0, gt=0)  # live ETA this far from the plan's: re-plan
    dispatch_off_route_m: float = Field(default=300.0, gt=0)  # farther than this from the leg's road path: off-route exception
    dispatch_silent_after_s: float = Field(default=120.0, gt=0)  # on duty with no fix this long: "silent" exception
    dispatch_reassign_after_s: float = Field(default=300.0, gt=0)  # silent this long: unstarted jobs are reassigned
    dispatch_shift_hours: float = Field(default=10.0, gt=0, le=24)  # planning horizon of a shift that just started
    tracking_max_accuracy_m: float = Field(default=150.0, gt=0)  # fixes with a worse reported accuracy are rejected
    tracking_future_skew_s: float = Field(default=30.0, ge=0)  # how far ahead of our clock a fix's ts may be
    tracking_max_age_s: float = Field(default=86400.0, gt=0)  # older fixes (offline buffers included) are rejected
    tracking_max_speed_mps: float = Field(default=70.0, gt=0)  # implied speed from the previous fix above this = teleport
    tracking_retention_days: int = Field(default=90, gt=0)  # history partitions older than this are dropped
    tracking_batch_max: int = Field(default=2000, gt=0)  # fixes per ingest batch (one COPY + one commit)
    tracking_batch_wait_ms: int = Field(default=20, ge=0)  # longest a fix waits for its batch to fill
    tracking_share_group: str = "ingest"  # MQTT shared-subscription group of the ingest replicas
    tracking_mqtt_connections: int = Field(default=8, gt=0, le=32)  # shared-subscription connections per ingest process (each has its own broker in-flight window)
    tracking_graph: str = ""  # road graph for map matching and the customer map (OSM file, graph dir, "default" = bundled Helsinki); "" = none
    tracking_link_grace_s: int = Field(default=7200, ge=0)  # a tracking link works this long after delivery
    tracking_link_ttl_s: int = Field(default=7 * 86400, gt=0)  # and never longer than this after it was issued
    tracking_exact_within_stops: int = Field(default=2, ge=0)  # customer sees the exact position within this many stops
    tracking_eta_min_change_s: float = Field(default=60.0, ge=0)  # push an ETA when it moves by at least this
    tracking_eta_max_interval_s: float = Field(default=30.0, gt=0)  # and at least this often while watched
    tracking_tile_url: str = ""  # map tiles for the tracking page; "" = offline (roads from our own graph)
    # --- notifications (e-mail, SMS, webhooks; docs/notifications.md) ---
    notifications_email_transport: str = "file"  # "smtp" (notifications_smtp_url) or "file" (.eml files under data_dir/outbox)
    notifications_smtp_url: str = "smtp://127.0.0.1:25"  # smtp://[user:pass@]host:port; smtp+starttls:// or smtps:// for TLS
    notifications_email_from: str = "Serena <no-reply@serena.localhost>"  # From: of every e-mail
    notifications_sms_transport: str = "file"  # only "file" (JSON files under data_dir/outbox/sms): no SMS provider yet
    notifications_public_url: str = "http://127.0.0.1:8000"  # base of links in messages (tracking page)
    notifications_webhook_allow_private: bool = False  # production only: allow webhook URLs on private/loopback addresses
    notifications_webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)  # one webhook POST, connect + response
    notifications_webhook_max_attempts: int = Field(default=8, gt=0, le=20)  # webhook POSTs before a message is failed
    notifications_retry_backoff_s: float = Field(default=30.0, gt=0)  # first retry delay; doubles per attempt
    notifications_retry_backoff_max_s: float = Field(default=3600.0, gt=0)  # longest delay between two attempts
    notifications_stale_sending_s: int = Field(default=600, gt=0)  # a message "sending" this long: its worker died mid-send
    worker_concurrency: int = Field(default=2, gt=0, le=64)  # Celery worker processes of `serena worker`
    # --- periodic jobs (Celery beat inside `serena worker`; docs/notifications.md "Periodic jobs") ---
    commerce_expire_interval_s: int = Field(default=300, gt=0)  # how often unpaid orders are expired
    commerce_unpaid_card_s: int = Field(default=3600, gt=0)  # a card order unpaid this long is cancelled (stock released)
    commerce_unpaid_bank_transfer_s: int = Field(default=7 * 86400, gt=0)  # same for a bank-transfer order
    events_processed_retention_s: int = Field(default=14 * 86400, ge=86400)  # processed_events rows kept at least this long (docs/events.md)
    events_prune_interval_s: int = Field(default=3600, gt=0)  # how often processed_events is pruned

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        return _check_url(v, ("postgresql", "postgres", "postgresql+asyncpg"), "SERENA_DATABASE_URL")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        return _check_url(v, ("redis", "rediss", "unix"), "SERENA_REDIS_URL")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        return _check_url(v, ("mqtt", "mqtts", "tcp"), "SERENA_MQTT_URL")

    @field_validator("stripe_api_base")
    @classmethod
    def _stripe_base(cls, v: str) -> str:
        return _check_url(v, ("http", "https"), "SERENA_STRIPE_API_BASE")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"SERENA_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {v!r}")
        return v.upper()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env in (Env.DEVELOPMENT, Env.TEST):
            return self
        defaults = {
            "SERENA_JWT_SECRET": self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < 32,
            "SERENA_STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret == DEV_WEBHOOK_SECRET,
            "SERENA_STRIPE_API_KEY": self.stripe_api_key == DEV_STRIPE_KEY,
            "SERENA_MQTT_SERVICE_PASSWORD": self.mqtt_service_password.startswith("dev-only"),
        }
        bad = [name for name, is_default in defaults.items() if is_default]
        if bad:
            raise ValueError(
                f"{bad[0]} is a development default (or too short); set a real secret for SERENA_ENV={self.env.value}"
            )
        return self

    @property
    def asyncpg_dsn(self) -> str:
        """The database URL in the form asyncpg accepts."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL for SQLAlchemy's asyncpg dialect."""
        scheme, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}"


class SettingsError(Exception):
    """A setting is invalid; the message names the variable in one line."""


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, turning pydantic's report into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = err["loc"][0] if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ")
        name = f"SERENA_{str(field).upper()}" if field else "settings"
        if msg.startswith("SERENA_"):
            raise SettingsError(msg) from None
        raise SettingsError(f"{name}: {msg}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return load_settings()
