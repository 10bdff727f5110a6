"""Build the Cython dispatch kernel from ext/ into the edge package (edge._kernel), and ship
the example sites of configs/ inside it (edge/examples/) so an installed package finds them
from any directory."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_namespace_packages, setup

extensions = [
    Extension(
        "edge._kernel",
        ["ext/kernel.pyx"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["-O3"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    packages=[*find_namespace_packages(include=["edge*", "drivers*", "hil*", "tools*"]),
              "edge.examples"],
    package_dir={"edge.examples": "configs"},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["ext"],
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
