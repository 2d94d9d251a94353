"""The platform's admin: every registration in one place, the classes in their capability's folder."""

from django.contrib import admin
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from tasks.batches.admin import BatchAdmin
from tasks.django_tasks.admin import TaskRunAdmin
from tasks.models import (
    Batch,
    DeadLetter,
    Delivery,
    FlowLimit,
    FlowLimitChange,
    Outbox,
    QueuePause,
    ScheduleChange,
    TaskRun,
)
from tasks.reliability.admin import DeadLetterAdmin, DeliveryAdmin, OutboxAdmin, QueuePauseAdmin, TaskResultAdmin
from tasks.reliability.flow_limit_admin import FlowLimitAdmin, FlowLimitChangeAdmin
from tasks.scheduling.admin import CrontabScheduleAdmin, PeriodicTaskAdmin, ScheduleChangeAdmin

admin.site.register(DeadLetter, DeadLetterAdmin)
admin.site.register(Outbox, OutboxAdmin)
admin.site.register(Delivery, DeliveryAdmin)
admin.site.register(TaskRun, TaskRunAdmin)
admin.site.register(Batch, BatchAdmin)
admin.site.register(QueuePause, QueuePauseAdmin)
admin.site.register(FlowLimit, FlowLimitAdmin)
admin.site.register(FlowLimitChange, FlowLimitChangeAdmin)
admin.site.register(ScheduleChange, ScheduleChangeAdmin)
# django-celery-beat and django-celery-results registered their own: replaced by the ones
# operators can run (schedules) and that answer on a million rows (results).
admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
admin.site.unregister(TaskResult)
admin.site.register(TaskResult, TaskResultAdmin)
admin.site.unregister(CrontabSchedule)
admin.site.register(CrontabSchedule, CrontabScheduleAdmin)
