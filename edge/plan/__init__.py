"""The economic planner: an LP over a rolling horizon, solved with HiGHS.

model.py builds the LP from a `PlanInput`, solve.py solves it and maps the result to a
`Plan`, planner.py re-plans on a schedule and on events and hands the plan to the cycle as
instructions. The same model, given the true series for a whole scenario, is the
perfect-foresight reference.
"""
