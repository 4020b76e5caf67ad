"""transfer studies: jobs.widths, jobs.transfer, trials.width

A job may sweep several widths; each trial records its width. Jobs made before this revision swept only their
proxy's base width (sweep_config.model.width): their rows are filled with it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 20:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('sweep_config', sa.JSON), sa.column('widths', sa.JSON))
trials = sa.table('trials', sa.column('job_id', sa.String), sa.column('width', sa.Integer))


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('widths', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('transfer', sa.JSON(), nullable=True))
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('width', sa.Integer(), nullable=True))

    bind = op.get_bind()
    for job_id, sweep_config in bind.execute(sa.select(jobs.c.id, jobs.c.sweep_config)).all():
        base_width = int(sweep_config['model']['width'])
        bind.execute(jobs.update().where(jobs.c.id == job_id).values(widths=[base_width]))
        bind.execute(trials.update().where(trials.c.job_id == job_id).values(width=base_width))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('widths', existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.alter_column('width', existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('width')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('transfer')
        batch_op.drop_column('widths')
