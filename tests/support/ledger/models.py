from django.db import models


class Effect(models.Model):
    """One application of a side effect; no unique key, so a duplicate shows as a second row."""

    key = models.CharField(max_length=100, db_index=True)
    worker_pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
