"""Edges of the group commits found in review: what a batch does must be what its items would
have done one by one, and a failed batch must not weaken what a lone commit guaranteed."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from stream_app.ingest import Recorded
from tests.integration.conftest import ServiceFactory
from tests.integration.test_batch_ingest import NOW, created, record, stored_access_token

pytestmark = pytest.mark.postgres

async def test_a_copy_of_an_event_id_later_in_the_batch_has_no_effect_whatever_it_says(
    make_service: ServiceFactory,
) -> None:
    """One by one, the second record with an id already applied is a duplicate and changes
    nothing, even if (a producer bug) its content differs: a later occurred_at must not let it win."""
    service = make_service()
    user = uuid.uuid4()
    first = created(service, user, access="first", at=NOW - timedelta(minutes=1))
    copy = created(service, user, access="copy", at=NOW).model_copy(update={"event_id": first.event_id})

    outcomes_ = await record(service, [first, copy])

    assert outcomes_ == [Recorded.STORED, Recorded.DUPLICATE]
    assert await stored_access_token(service, user) == "first"
