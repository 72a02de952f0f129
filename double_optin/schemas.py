"""The JSON API's bodies (`/api/...`), as /openapi.json documents them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["ListInfo", "Problem", "SignupAnswer", "SignupRequest"]


class SignupRequest(BaseModel):
    email: str = Field(max_length=320, description="The address to subscribe.")
    lists: list[str] = Field(
        min_length=1,
        max_length=20,
        description="Names of configured lists (see GET /api/lists). Your form must show each "
        "list's exact `wording` next to an unticked box: that wording is stored as evidence.",
    )
    locale: Literal["nl", "en"] | None = Field(
        default=None, description="Language of the confirmation mail and pages."
    )
    source_url: str | None = Field(
        default=None,
        max_length=500,
        description="URL of the page with your form, stored as the consent's source.",
    )
    website: str = Field(
        default="",
        max_length=200,
        description="Honeypot: render it hidden and pass what it holds; people leave it empty.",
    )


class SignupAnswer(BaseModel):
    status: Literal["pending_confirmation"] = "pending_confirmation"
    detail: str = (
        "If the address can receive mail, a confirmation link is on its way. Nothing is sent "
        "to it before the link is confirmed."
    )


class Problem(BaseModel):
    error: str
    detail: str


class ListInfo(BaseModel):
    name: str
    title: str
    wording: str
