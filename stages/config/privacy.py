"""``[privacy]``: whose faces leave the server, and whether the recordings keep them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from pipeline.httpauth import check_stored


class PrivacySettings(BaseModel, extra="forbid"):
    """What is blurred. Heads are the model's ``hardhat`` / ``no_hardhat`` boxes, else the top of a person's
    box; ``people`` blurs whole people. Whatever is set here is blurred in all that leaves the server (the
    live view, snapshots and so MQTT images and webhook links); clips and recordings served over HTTP only
    from blurred recordings. Who may see faces: every holder of the HTTP password, or where a reviewer's
    secret is set, only those who gave it."""

    blur: list[Literal["heads", "people"]] = Field(
        default_factory=list, description='what is blurred in what leaves the server: ["heads"] or ["people"]'
    )
    blur_recordings: bool = Field(
        False,
        description="blur the recordings too (drawn recordings only: a camera's own copied video cannot be); "
        "without it, clips and recordings are not served over HTTP while blur is set",
    )
    reviewers_see_faces: bool = Field(
        False,
        description="the review page may show unblurred snapshots and clips to a user who gave the HTTP password "
        "(needs http_password_hash), or the reviewers' own where reviewer_password_hash is set",
    )
    reviewer_password_hash: Annotated[str, AfterValidator(check_stored)] | None = Field(
        None,
        description="a second secret, hashed by 'vestwatch http-password --reviewer', that alone shows unblurred "
        "evidence (needs reviewers_see_faces); the HTTP password then shows the page blurred",
    )
