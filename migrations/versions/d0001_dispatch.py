"""Dispatch: delivery jobs and transitions, plans, task-list acks, shifts, chain of custody, exceptions.

Revision ID: d0001
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op
import sqlalchemy as sa
import geoalchemy2
from sqlalchemy.dialects import postgresql

revision = "d0001"
down_revision = "0002"
branch_labels = ("dispatch",)
depends_on = None


def upgrade() -> None:
    op.create_table('dispatch_exceptions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=True),
    sa.Column('driver_id', sa.Integer(), nullable=True),
    sa.Column('risk', sa.Float(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('suggested_action', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispatch_exceptions'))
    )
    op.create_index('uq_dispatch_exceptions_open', 'dispatch_exceptions', ['kind', 'subject'], unique=True, postgresql_where='resolved_at IS NULL')
    op.create_table('dispatch_plans',
    sa.Column('version', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('planner_id', sa.String(length=64), nullable=False),
    sa.Column('routes', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('unassigned', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('objective', sa.Float(), nullable=False),
    sa.Column('churn', sa.Float(), nullable=False),
    sa.Column('solve_ms', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_dispatch_plans'))
    )
    op.create_index(op.f('ix_dispatch_plans_region'), 'dispatch_plans', ['region'], unique=False)
    op.create_table('delivery_jobs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('package_code', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('depot_id', sa.Integer(), nullable=True),
    sa.Column('pickup', geoalchemy2.types.Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('dropoff', geoalchemy2.types.Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('recipient_name', sa.String(length=200), nullable=False),
    sa.Column('recipient_phone', sa.String(length=32), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('service_s', sa.Float(), nullable=False),
    sa.Column('weight_kg', sa.Float(), nullable=False),
    sa.Column('volume_l', sa.Float(), nullable=False),
    sa.Column('parcels', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('skills', postgresql.ARRAY(sa.String(length=32)), nullable=False),
    sa.Column('driver_id', sa.Integer(), nullable=True),
    sa.Column('plan_version', sa.BigInteger(), nullable=True),
    sa.Column('sequence', sa.Integer(), nullable=True),
    sa.Column('eta', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivery_otp_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['depot_id'], ['depots.id'], name=op.f('fk_delivery_jobs_depot_id_depots')),
    sa.ForeignKeyConstraint(['driver_id'], ['drivers.id'], name=op.f('fk_delivery_jobs_driver_id_drivers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_jobs')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_delivery_jobs_idempotency_key')),
    sa.UniqueConstraint('package_code', name=op.f('uq_delivery_jobs_package_code'))
    )
    op.create_index('ix_delivery_jobs_open', 'delivery_jobs', ['state'], unique=False, postgresql_where="state NOT IN ('delivered','returned','cancelled')")
    op.create_table('driver_shifts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('driver_id', sa.Integer(), nullable=False),
    sa.Column('vehicle_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('start_lat', sa.Float(), nullable=True),
    sa.Column('start_lng', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['driver_id'], ['drivers.id'], name=op.f('fk_driver_shifts_driver_id_drivers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vehicle_id'], ['vehicles.id'], name=op.f('fk_driver_shifts_vehicle_id_vehicles')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_driver_shifts'))
    )
    op.create_index('uq_driver_shifts_open', 'driver_shifts', ['driver_id'], unique=True, postgresql_where='ended_at IS NULL')
    op.create_table('task_list_acks',
    sa.Column('driver_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['driver_id'], ['drivers.id'], name=op.f('fk_task_list_acks_driver_id_drivers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('driver_id', 'version', name=op.f('pk_task_list_acks'))
    )
    op.create_table('custody_records',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('driver_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('lng', sa.Float(), nullable=True),
    sa.Column('accuracy_m', sa.Float(), nullable=True),
    sa.Column('inside_geofence', sa.Boolean(), nullable=True),
    sa.Column('override_reason', sa.Text(), nullable=False),
    sa.Column('proof_kind', sa.String(length=16), nullable=False),
    sa.Column('proof_sha256', sa.String(length=64), nullable=False),
    sa.Column('proof_key', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['driver_id'], ['drivers.id'], name=op.f('fk_custody_records_driver_id_drivers')),
    sa.ForeignKeyConstraint(['job_id'], ['delivery_jobs.id'], name=op.f('fk_custody_records_job_id_delivery_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custody_records')),
    sa.UniqueConstraint('hash', name=op.f('uq_custody_records_hash')),
    sa.UniqueConstraint('job_id', 'prev_hash', name='uq_custody_records_job_prev')
    )
    op.create_index(op.f('ix_custody_records_job_id'), 'custody_records', ['job_id'], unique=False)
    op.create_table('job_transitions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['delivery_jobs.id'], name=op.f('fk_job_transitions_job_id_delivery_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_transitions'))
    )
    op.create_index(op.f('ix_job_transitions_job_id'), 'job_transitions', ['job_id'], unique=False)
    # Chain-of-custody records are evidence: the database refuses to change or remove them.
    op.execute("""
        CREATE FUNCTION custody_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'custody_records is append-only (% refused)', TG_OP;
        END $$;
    """)
    op.execute("CREATE TRIGGER custody_no_update BEFORE UPDATE OR DELETE ON custody_records "
               "FOR EACH ROW EXECUTE FUNCTION custody_append_only()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS custody_no_update ON custody_records")
    op.execute("DROP FUNCTION IF EXISTS custody_append_only()")
    op.drop_index(op.f('ix_job_transitions_job_id'), table_name='job_transitions')
    op.drop_table('job_transitions')
    op.drop_index(op.f('ix_custody_records_job_id'), table_name='custody_records')
    op.drop_table('custody_records')
    op.drop_table('task_list_acks')
    op.drop_index('uq_driver_shifts_open', table_name='driver_shifts', postgresql_where='ended_at IS NULL')
    op.drop_table('driver_shifts')
    op.drop_index('ix_delivery_jobs_open', table_name='delivery_jobs', postgresql_where="state NOT IN ('delivered','returned','cancelled')")
    op.drop_table('delivery_jobs')
    op.drop_index(op.f('ix_dispatch_plans_region'), table_name='dispatch_plans')
    op.drop_table('dispatch_plans')
    op.drop_index('uq_dispatch_exceptions_open', table_name='dispatch_exceptions', postgresql_where='resolved_at IS NULL')
    op.drop_table('dispatch_exceptions')

