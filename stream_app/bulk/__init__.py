"""Bulk refresh jobs: a selector of connections, refreshed in the background by a worker at a
rate per platform, with progress and counts kept in the database (``POST /refresh/bulk``,
``token-refresh bulk-refresh``)."""

from stream_app.bulk.models import BulkJobRow, JobStatus
from stream_app.bulk.selector import BulkSelector
from stream_app.bulk.settings import BulkSettings
from stream_app.bulk.store import BulkJobRequest, BulkJobs, BulkJobView

__all__ = ["BulkJobRequest", "BulkJobRow", "BulkJobView", "BulkJobs", "BulkSelector", "BulkSettings", "JobStatus"]
