"""The computations behind the book: one module per chapter, each holding the runs its notebook
trains (``configs(**params)``), its tables and its figures; ``common`` and ``plots`` hold what
several chapters share. The training core (activations, models, data, train, results) never
imports this package.

``CHAPTERS`` maps every notebook stem to its module, so that a grid runner can list a profile's
runs without executing notebooks: ``CHAPTERS[stem].configs(**notebook_parameters)``.
"""
from . import (cifar, convergence, dropout, efficiency, evidence, lslu_function,
               num_activations, selectivity, summary, task_specific, theta_omega, zoo)

CHAPTERS = {
    "00_evidence": evidence,
    "01_lslu_function": lslu_function,
    "02_cifar10": cifar,
    "03_cifar100": cifar,
    "04_num_activations": num_activations,
    "05_theta_omega": theta_omega,
    "06_dropout": dropout,
    "07_task_specific": task_specific,
    "08_convergence": convergence,
    "09_class_selectivity": selectivity,
    "10_efficiency": efficiency,
    "11_activation_zoo": zoo,
    "12_summary": summary,
}
