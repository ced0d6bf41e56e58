"""SQLAlchemy 2.0 typed models matching schema.sql (tests/test_schema.py proves they agree).

schema.sql is the source of truth and is what gets applied; these models exist for typed reads
and for operators' tools. Status moves go through db/stories.py, never through the ORM.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db import event_models as _event_models  # noqa: F401  (registers the events' tables on Base.metadata)
from db import lifecycle_models as _lifecycle_models  # noqa: F401  (the storage deletion queue's table)
from db import usage_models as _usage_models  # noqa: F401  (the cost tables: provider_usage, budget_holds)
from db.model_base import NAMING, STEP_STATUSES, Base
from db.model_base import count as _count
from db.model_base import pk as _pk
from db.model_base import status as _status
from db.model_base import token as _token
from db.model_base import ts as _ts

__all__ = ["NAMING", "STEP_STATUSES", "Base"]



class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _pk()
    email: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (
        CheckConstraint("status IN ('pending_upload', 'uploaded', 'failed', 'deleted')", name="status"),
        CheckConstraint(
            "ai_processing_status IN ('pending', 'processing', 'completed', 'failed')",
            name="ai_processing_status",
        ),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    storage_provider: Mapped[str] = mapped_column(String, nullable=False)
    bucket: Mapped[str | None] = mapped_column(String)
    object_key: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    filename: Mapped[str] = mapped_column(String, nullable=False)
    content_type: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = _status("pending_upload")
    ai_processing_status: Mapped[str | None] = _status("pending", nullable=True)
    ai_error_message: Mapped[str | None] = mapped_column(Text)
    detected_objects: Mapped[Any | None] = mapped_column(JSONB)
    detected_labels: Mapped[Any | None] = mapped_column(JSONB)
    face_details: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    claim_token: Mapped[int] = _token()
    takeovers: Mapped[int] = _count()
    # The worker's own (schema.sql, its end): the character profile, face data cleared with
    # face_details (pipeline/providers/character.py; db/photos.py clear_face_data).
    character_profile: Mapped[Any | None] = mapped_column(JSONB)


class Story(Base):
    __tablename__ = "stories"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed')", name="status"),
        CheckConstraint("budget_cents >= 0", name="budget_cents"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    child_name: Mapped[str] = mapped_column(String, nullable=False)
    child_age: Mapped[int] = mapped_column(Integer, nullable=False)
    story_theme: Mapped[str] = mapped_column(String, nullable=False, index=True)
    protagonist_photo_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("photos.id"), nullable=False, index=True  # NO ACTION: README "Personal data"
    )
    title: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = _status("pending")
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    claim_token: Mapped[int] = _token()
    takeovers: Mapped[int] = _count()
    # Redoing a page (schema.sql's section; db/redo.py)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    redo_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    book_pdf_key: Mapped[str | None] = mapped_column(Text)
    book_html_key: Mapped[str | None] = mapped_column(Text)
    # Retention (schema.sql's "Personal data" section): when the story's files were deleted
    files_deleted_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    # What each book costs (schema.sql's section; db/usage.py): NULL = STORY_BUDGET_CENTS
    budget_cents: Mapped[int | None] = mapped_column(BigInteger)
    budget_unlimited: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))


class StoryPage(Base):
    __tablename__ = "story_pages"
    __table_args__ = (
        UniqueConstraint("story_id", "page_number"),
        CheckConstraint("page_number >= 1", name="page_number"),
        *(
            CheckConstraint(f"{c} IN ('pending', 'processing', 'completed', 'failed')", name=c)
            for c in ("text_generation_status", "image_generation_status", "personalization_status")
        ),
    )

    id: Mapped[uuid.UUID] = _pk()
    story_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("stories.id", ondelete="CASCADE"), nullable=False, index=True
    )
    page_number: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    text: Mapped[str | None] = mapped_column(Text)
    base_image_key: Mapped[str | None] = mapped_column(String)
    personalized_image_key: Mapped[str | None] = mapped_column(String)
    text_generation_status: Mapped[str | None] = _status("pending", nullable=True)
    image_generation_status: Mapped[str | None] = _status("pending", nullable=True)
    personalization_status: Mapped[str | None] = _status("pending", nullable=True)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    claim_token: Mapped[int] = _token()
    takeovers: Mapped[int] = _count()
    # Redoing a page (schema.sql's section; db/redo.py): never a name ending in "_status" here
    revision: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")  # (`text` is a column)
    redo_hint: Mapped[str | None] = mapped_column(Text)
    previous: Mapped[Any | None] = mapped_column(JSONB)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending_payment', 'paid', 'fulfilled', 'shipped', 'failed')", name="status"
        ),
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint("currency ~ '^[A-Za-z]{3}$'", name="currency"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    story_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("stories.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    product_type: Mapped[str] = mapped_column(String, nullable=False, index=True)
    status: Mapped[str] = _status("pending_payment")
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    shipping_address: Mapped[Any | None] = mapped_column(JSONB)
    payment_provider: Mapped[str | None] = mapped_column(String)
    payment_intent_id: Mapped[str | None] = mapped_column(String, unique=True)
    pod_provider: Mapped[str | None] = mapped_column(String)
    pod_order_id: Mapped[str | None] = mapped_column(String, index=True)
    tracking_number: Mapped[str | None] = mapped_column(String)
    paid_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    fulfilled_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    shipped_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()


class StoryOutline(Base):
    __tablename__ = "story_outlines"
    __table_args__ = (CheckConstraint("jsonb_typeof(beats) = 'array'", name="beats"),)

    story_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True
    )
    title: Mapped[str] = mapped_column(String, nullable=False)
    style: Mapped[str] = mapped_column(String, nullable=False, server_default=text("''"))
    beats: Mapped[Any] = mapped_column(JSONB, nullable=False)
    protagonist_face: Mapped[Any | None] = mapped_column(JSONB)  # pipeline/stories/faces.py ProtagonistChoice
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    finish_token: Mapped[int] = _token()
    finish_takeovers: Mapped[int] = _count()
    finish_claimed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))


class StepError(Base):
    __tablename__ = "step_errors"
    __table_args__ = (
        CheckConstraint(
            "stage IN ('analysis', 'outline', 'text', 'image', 'personalization', 'finish')",
            name="stage",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    story_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("stories.id", ondelete="CASCADE"), index=True
    )
    page_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("story_pages.id", ondelete="CASCADE"), index=True
    )
    photo_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("photos.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(String, nullable=False)
    permanent: Mapped[bool] = mapped_column(Boolean, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    task_id: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), nullable=False, server_default=func.now(), index=True
    )


class ProviderJob(Base):
    """A remote job (Replicate prediction) of a page step; see schema.sql for the guarantees."""

    __tablename__ = "provider_jobs"
    __table_args__ = (
        CheckConstraint("stage IN ('image', 'personalization')", name="stage"),
        CheckConstraint("status IN ('creating', 'running', 'succeeded', 'failed', 'canceled', 'expired')",
                        name="status"),
        CheckConstraint("recreation >= 0", name="recreation"),
        Index("uq_provider_jobs_live", "page_id", "stage", unique=True,
              postgresql_where=text("status IN ('creating', 'running')")),
        Index("uq_provider_jobs_external_id", "provider", "external_id", unique=True,
              postgresql_where=text("external_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = _pk()
    page_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("story_pages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stage: Mapped[str] = mapped_column(String, nullable=False)
    provider: Mapped[str] = mapped_column(String, nullable=False)
    external_id: Mapped[str | None] = mapped_column(String)
    input_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False, server_default=text("'creating'"))
    error_message: Mapped[str | None] = mapped_column(Text)
    polls: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    errors: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # 0 for a page step's first job; n for the n-th new job in a row made because the previous
    # one's output expired before it was copied (that one has status 'expired').
    recreation: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Celery task ids: the run that created it (its poll), the follow a verified completion webhook
    # sent (with when: set once), the run that ended it and completed the step (schema.sql).
    started_by: Mapped[str | None] = mapped_column(String)
    woken_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    woken_by: Mapped[str | None] = mapped_column(String)
    finished_by: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    claim_token: Mapped[int] = _token()  # the page step's claim it was made under


class OrderStep(Base):
    """An order's step between paid and the print provider (claims with a lease, results)."""

    __tablename__ = "order_steps"
    __table_args__ = (
        CheckConstraint("step IN ('print_files', 'print_job')", name="step"),
        CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed')", name="status"),
        CheckConstraint("run >= 1", name="run"),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String, primary_key=True)
    status: Mapped[str] = mapped_column(String, nullable=False, server_default=text("'pending'"), index=True)
    run: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    result: Mapped[Any | None] = mapped_column(JSONB)
    checked_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True), index=True)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
    claim_token: Mapped[int] = _token()
    takeovers: Mapped[int] = _count()


class OrderEvent(Base):
    """An order's history: payment events, provider statuses, failures (the order's error
    message) and operator retries. (source, event_id) counts a provider's event once."""

    __tablename__ = "order_events"
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        CheckConstraint("source IN ('stripe', 'lulu', 'local', 'worker', 'operator')", name="source"),
        CheckConstraint("outcome IN ('applied', 'ignored', 'rejected', 'failed', 'retried', 'noted')",
                        name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True
    )
    source: Mapped[str] = mapped_column(String, nullable=False)
    event_id: Mapped[str | None] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String, nullable=False)
    outcome: Mapped[str] = mapped_column(String, nullable=False)
    message: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), nullable=False, server_default=func.now(), index=True
    )


class PageRedo(Base):
    """A request to redo one page of a completed story (stories.redo_page; db/redo.py)."""

    __tablename__ = "page_redos"
    __table_args__ = (
        UniqueConstraint("story_id", "request_key"),
        CheckConstraint("status IN ('requested', 'refused', 'running', 'completed', 'failed')", name="status"),
        CheckConstraint("from_stage IN ('text', 'image', 'personalization')", name="from_stage"),
    )

    id: Mapped[uuid.UUID] = _pk()
    story_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("stories.id", ondelete="CASCADE"), nullable=False, index=True
    )
    page_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("story_pages.id",
                                                                                    ondelete="CASCADE"))
    page_number: Mapped[int | None] = mapped_column(Integer)
    from_stage: Mapped[str] = mapped_column(String, nullable=False)
    hint: Mapped[str | None] = mapped_column(Text)
    request_key: Mapped[str] = mapped_column(String, nullable=False)
    task_id: Mapped[str | None] = mapped_column(String)
    revision: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, nullable=False, server_default=text("'requested'"))
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()
