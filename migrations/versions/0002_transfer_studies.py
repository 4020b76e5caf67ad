"""transfer studies: jobs.widths, jobs.transfer, trials.width

A job may sweep several widths; each trial records its width. Jobs made before this revision swept only their
proxy's base width (sweep_config.model.width): their rows are filled with it.

The downgrade refuses while a job is a transfer study (several widths, a transfer summary, or a trial at another
width than the base): dropping the columns would lose its widths, and upgrading again would relabel all its trials
as the base width, silently. A one-width job goes down and up unchanged.

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

jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('sweep_config', sa.JSON), sa.column('widths', sa.JSON),
                sa.column('transfer', sa.JSON))
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


def transfer_studies(bind) -> list[str]:
    """The jobs that revision 0001 cannot hold: what the upgrade would rebuild differs from what is stored."""
    base_width, studies = {}, set()
    for job_id, sweep_config, widths, summary in bind.execute(
            sa.select(jobs.c.id, jobs.c.sweep_config, jobs.c.widths, jobs.c.transfer)).all():
        base_width[job_id] = int(sweep_config['model']['width'])
        if widths != [base_width[job_id]] or summary is not None:
            studies.add(job_id)
    for job_id, width in bind.execute(sa.select(trials.c.job_id, trials.c.width).distinct()).all():
        if width != base_width[job_id]:
            studies.add(job_id)
    return sorted(studies)


def downgrade() -> None:
    studies = transfer_studies(op.get_bind())
    if studies:
        raise RuntimeError(f"refusing to downgrade 0002: {len(studies)} job(s) are transfer studies "
                           f"({', '.join(studies[:10])}): revision 0001 has no widths, and upgrading again would "
                           "relabel all their trials as the base width. Delete those jobs first, or restore a "
                           "backup taken at 0001.")
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('width')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('transfer')
        batch_op.drop_column('widths')
