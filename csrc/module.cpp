// Makes the setup.py-built library importable as the Python module tuco_kernels._C. Importing it runs
// the static TORCH_LIBRARY registrations; the ops are then reached through torch.ops.tuco.*.
#include <Python.h>

static struct PyModuleDef tuco_module = {PyModuleDef_HEAD_INIT, "_C", "tuco_kernels compiled ops", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&tuco_module); }
