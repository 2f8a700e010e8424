"""Configuration, read from the environment (prefix ``TESSERA_``)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of Tessera, with its environment variable and default.

    Parameters:
      database_url: ``TESSERA_DATABASE_URL``, a SQLAlchemy URL (psycopg 3 driver).
      redis_url: ``TESSERA_REDIS_URL``; its db number is honoured.
      redis_namespace: ``TESSERA_REDIS_NAMESPACE``, prefix of every Redis key (broker queues too),
        so that several deployments or test runs can share one Redis.
      shards: ``TESSERA_SHARDS``, the fixed number of product shards.
      hold_ttl_seconds: ``TESSERA_HOLD_TTL_SECONDS``, default hold lifetime.
      batch_max: ``TESSERA_BATCH_MAX``, most commands one writer applies in one transaction.
      lease_ttl_seconds: ``TESSERA_LEASE_TTL_SECONDS``, how long a shard lease lives unrenewed.
      sweep_interval_seconds / sweep_grace_seconds: the recovery sweep's period, and how long a
        recorded command may wait before the sweep rings its shard again.
      max_attempts: ``TESSERA_MAX_ATTEMPTS``, how many times applying a command may fail (errors
        other than transient ones) before it is parked as a dead letter.
      adjustment_approval_pieces / adjustment_approval_value: ``TESSERA_ADJUSTMENT_APPROVAL_PIECES``
        and ``TESSERA_ADJUSTMENT_APPROVAL_VALUE``, the global thresholds above which an adjustment
        (in pieces either way, or in value at the average cost) waits for a second person's approval
        (a product's own thresholds replace them); unset: no such limit.
      hand_over_seconds: ``TESSERA_HAND_OVER_SECONDS``, how long a hold whose caller waits for its
        answer (the API's ``?wait=``) is left to its shard's writer to record and decide, at most half
        the wait, before the API records it itself (`producers.handover`); 0: the API records every
        hold itself.
      webhook_secret: ``TESSERA_WEBHOOK_SECRET``, the payment webhook's HMAC secrets, comma-separated
        (the first signs; any of them verifies, so a secret can be rotated).
    """

    # "None" reads as None, as str() writes an unset setting (tests and benches pass settings on so).
    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore", env_parse_none_str="None")

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/tessera"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "tessera"
    shards: int = Field(default=16, ge=1, le=4096)
    hold_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    batch_max: int = Field(default=256, ge=1, le=10_000)
    lease_ttl_seconds: float = Field(default=10.0, gt=0.5, le=600)
    sweep_interval_seconds: float = Field(default=2.0, gt=0, le=3600)
    sweep_grace_seconds: float = Field(default=3.0, ge=0, le=3600)
    worker_threads: int = Field(default=4, ge=1, le=64)
    queue_prefetch: int = Field(default=200, ge=1, le=10_000)
    max_attempts: int = Field(default=5, ge=1, le=100)
    log_level: str = "INFO"
    adjustment_approval_pieces: Decimal | None = Field(default=Decimal(100), ge=0)
    adjustment_approval_value: Decimal | None = Field(default=None, ge=0)
    hand_over_seconds: float = Field(default=1.0, ge=0, le=30)
    webhook_secret: str = ""

    @property
    def webhook_secrets(self) -> list[str]:
        return [secret.strip() for secret in self.webhook_secret.split(",") if secret.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
