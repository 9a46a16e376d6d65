"""``[events]``: when a person without a zone's required PPE becomes a violation event, and its clip."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EventSettings(BaseModel, extra="forbid"):
    """When a person without a zone's required PPE becomes a violation event, and how it lives."""

    dwell_s: float = Field(2.0, ge=0, description="missing the item this long (capture time) opens an event")
    update_s: float = Field(5.0, gt=0, description="an open event is re-announced at most this often")
    lost_s: float = Field(3.0, gt=0, description="a person unseen this long has left: their event ends")
    history: int = Field(5, ge=1, le=50, description="PPE observations a person's yes/no is the majority of")
    min_conf: float = Field(0.25, ge=0, le=1, description="PPE boxes below this do not count")
    clip_pre_s: float = Field(5.0, ge=0, description="an event's clip starts this long before it (at a keyframe)")
    clip_post_s: float = Field(5.0, ge=0, description="and ends this long after it")
    clip_max_s: float = Field(600.0, gt=0, description="a longer event's clip is its first this many seconds")
