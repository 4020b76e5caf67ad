"""horizon sweeps and grid extension: trials.steps, jobs.horizon, jobs.extend_rounds

A job may sweep its base width at several horizons (training steps): each such trial records its own `steps`
(NULL: the job's `steps`, as every trial before this revision). A finished job of several horizons stores the fit of
lr* against tokens (gdn.horizon.HorizonFit) in `horizon`. A job whose best lr sat on its grid's edge adds learning
rates beyond it in rounds; `extend_rounds` counts them (NULL: none).

The downgrade refuses while any of the three holds something: revision 0004 cannot say which horizon a trial ran
at, and down then up must give the same rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 15:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

trials = sa.table('trials', sa.column('job_id', sa.String), sa.column('steps', sa.Integer))
jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('horizon', sa.JSON),
                sa.column('extend_rounds', sa.Integer))


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steps', sa.Integer(), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('horizon', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('extend_rounds', sa.Integer(), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    held = set(bind.execute(sa.select(trials.c.job_id).where(trials.c.steps.is_not(None)).distinct()).scalars())
    held |= set(bind.execute(sa.select(jobs.c.id).where(sa.or_(jobs.c.horizon.is_not(None),
                                                               jobs.c.extend_rounds.is_not(None)))).scalars())
    if held:
        names = sorted(held)
        raise RuntimeError(f"refusing to downgrade 0005: {len(names)} job(s) ({', '.join(names[:10])}) swept "
                           "several horizons or extended their grid (trials.steps, jobs.horizon, jobs.extend_rounds), "
                           "which revision 0004 cannot hold. Delete those jobs first, or restore a backup taken at "
                           "0004.")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('extend_rounds')
        batch_op.drop_column('horizon')
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('steps')
