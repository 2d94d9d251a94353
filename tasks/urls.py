"""The platform's own endpoints: health for load balancers, metrics for Prometheus."""

from django.urls import path

from tasks.monitoring import views as monitoring_views

app_name = "tasks"

urlpatterns = [
    path("health/live", monitoring_views.health_live, name="health_live"),
    path("health/ready", monitoring_views.health_ready, name="health_ready"),
    path("metrics", monitoring_views.metrics, name="metrics"),
]
