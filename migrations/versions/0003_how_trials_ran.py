"""how a trial ran: trials.backend, trials.trainer, trials.cuda_graphs

What the worker's settings chose for a trial (the gated delta rule's backend, a lone trial or a pack, CUDA graphs)
changes its timing and its last bits, so each result records it (gdn.spec.TrialResult). Trials finished before
this revision have none: the columns are nullable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 13:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backend', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('trainer', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('cuda_graphs', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('cuda_graphs')
        batch_op.drop_column('trainer')
        batch_op.drop_column('backend')
