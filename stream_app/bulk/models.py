"""The table of bulk refresh jobs lives with the other tables (stream_app.db.models, so
`Base.metadata` knows every table); its names are re-exported here for the bulk package."""

from stream_app.db.models import ACTIVE_STATUSES, BulkJobRow, JobStatus

__all__ = ["ACTIVE_STATUSES", "BulkJobRow", "JobStatus"]
