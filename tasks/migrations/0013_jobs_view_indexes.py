from django.db import migrations, models

# PostgreSQL only: a BRIN index on created_at (rows arrive in time order, so a few pages of
# summaries find any time range of a million rows, and inserts barely pay for it), and the
# full-text index of the payload's values the jobs view's search uses
# (tasks/reliability/jobs_view.py PAYLOAD_WORDS, the same expression).
POSTGRES_INDEXES = [
    "CREATE INDEX IF NOT EXISTS delivery_created_brin ON tasks_delivery USING brin (created_at)",
    "CREATE INDEX IF NOT EXISTS delivery_payload_words ON tasks_delivery USING gin "
    "(jsonb_to_tsvector('simple'::regconfig, payload, '[\"string\", \"numeric\"]'::jsonb))",
]


def create_postgres_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for sql in POSTGRES_INDEXES:
            schema_editor.execute(sql)


def drop_postgres_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in ("delivery_created_brin", "delivery_payload_words"):
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0012_flow_limits"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["status", "-id"], name="delivery_status_idx"),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["handler", "-id"], name="delivery_handler_idx"),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["queue", "-id"], name="delivery_queue_idx"),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(fields=["task_id"], name="delivery_task_id_idx"),
        ),
        migrations.RunPython(create_postgres_indexes, drop_postgres_indexes),
    ]
