from django.db import migrations, models

class Migration(migrations.Migration):

    dependencies = [
        ("tasks", "0004_beat_generation_and_scheduled_runs"),
    ]

    operations = [
        migrations.CreateModel(
            name="StreamCursor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50, unique=True)),
                ("outbox_id", models.BigIntegerField(default=0)),
                ("candidate_id", models.BigIntegerField(default=0)),
                ("candidate_writers", models.JSONField(blank=True, default=list)),
            ],
        ),
        migrations.CreateModel(
            name="StreamPosition",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("stream", models.CharField(max_length=200, unique=True)),
                ("position", models.BigIntegerField(default=0)),
                ("entry_ms", models.BigIntegerField(default=0)),
                ("entry_seq", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="StreamEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("message_id", models.UUIDField(unique=True)),
                ("outbox_id", models.BigIntegerField(help_text="The outbox row it was copied from (that row may be pruned).")),
                ("stream", models.CharField(max_length=200)),
                ("position", models.BigIntegerField(help_text="1, 2, 3, ... within the stream, in the order the relay saw commits.")),
                ("entry_id", models.CharField(help_text="The id in the stream (Redis: explicit XADD id).", max_length=40)),
                ("key", models.CharField(max_length=200)),
                ("message_type", models.CharField(max_length=200)),
                ("payload", models.JSONField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("appended_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "verbose_name_plural": "stream entries",
                "indexes": [
                    models.Index(condition=models.Q(("appended_at__isnull", True)), fields=["stream", "position"], name="stream_unappended_idx"),
                    models.Index(fields=["outbox_id"], name="stream_entry_outbox_idx"),
                    models.Index(condition=models.Q(("appended_at__isnull", False)), fields=["appended_at"], name="stream_appended_idx"),
                ],
                "constraints": [models.UniqueConstraint(fields=("stream", "position"), name="stream_entry_position_once")],
            },
        ),
    ]
