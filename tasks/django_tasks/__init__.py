"""Django's task API (``django.tasks`` in Django 6, the ``django-tasks`` backport on 5.2) on the
platform: ``tasks.django_tasks.backend.PlatformTaskBackend`` in ``TASKS``."""
