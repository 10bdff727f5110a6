"""Row layouts of the dispatch kernel's device arrays, as compile-time constants, so every
Cython kernel (dispatch now; planner and flexible-load allocation later) `cimport`s one
definition. edge/dispatch.py mirrors them for Python; a test checks they agree."""

cdef enum:
    C_B_P = 0
    C_B_PREV = 1
    C_B_SOC = 2
    C_B_SOC_MIN = 3
    C_B_SOC_MAX = 4
    C_B_MAX_CH = 5
    C_B_MAX_DIS = 6
    C_B_RAMP = 7
    C_B_OK = 8
    C_NB = 9
    C_V_P = 0
    C_V_RATED = 1
    C_V_PREV = 2
    C_V_RAMP = 3
    C_V_OK = 4
    C_NV = 5
    C_L_P = 0
    C_L_RATED = 1
    C_L_ON = 2
    C_L_PRIO = 3
    C_L_AGE = 4
    C_L_MIN_ON = 5
    C_L_MIN_OFF = 6
    C_L_MARGIN = 7
    C_L_OK = 8
    C_NL = 9
    C_IMPORT_UNMET = 1
    C_EXPORT_UNMET = 2
    C_TARGET_UNMET = 4
