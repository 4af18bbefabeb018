"""MRML volume nodes <-> MRIDenoiseLib volumes: arrays, geometry, diffusion tables.

Slicer works in RAS, ITK/SimpleITK (and so MRIDenoiseLib) in LPS: the first two axes of origin,
directions and gradients change sign between the two.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from MRIDenoiseLib.volume import DiffusionInfo, Geometry, Volume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
DWI_CLASS = "vtkMRMLDiffusionWeightedVolumeNode"


def _matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def geometry_from_node(node) -> Geometry:
    """The node's IJK-to-RAS placement as an LPS Geometry."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _matrix_to_numpy(matrix)
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    directions = _RAS_TO_LPS @ (ijk_to_ras[:3, :3] / spacing)
    origin = _RAS_TO_LPS @ ijk_to_ras[:3, 3]
    return Geometry(tuple(spacing), tuple(origin), tuple(directions.ravel()))


def ijk_to_ras_from_geometry(geometry: Geometry) -> vtk.vtkMatrix4x4:
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ geometry.direction_matrix @ np.diag(geometry.spacing)
    matrix[:3, 3] = _RAS_TO_LPS @ np.asarray(geometry.origin)
    return _numpy_to_matrix(matrix)


def volume_from_node(node) -> Volume:
    """A copy of a scalar or diffusion-weighted node as a Volume (the node is not touched)."""
    if node is None or node.GetImageData() is None:
        raise ValueError("the input volume node has no image data")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"{node.GetClassName()} is not supported; choose a scalar or diffusion-weighted volume")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    diffusion = _diffusion_from_node(node) if node.IsA(DWI_CLASS) else None
    return Volume(array, geometry_from_node(node), diffusion, source_dtype=array.dtype)


def _diffusion_from_node(node) -> DiffusionInfo:
    count = node.GetNumberOfGradients()
    gradients = np.array([node.GetDiffusionGradient(i) for i in range(count)], dtype=float)
    bvalues = np.array([node.GetBValue(i) for i in range(count)], dtype=float)
    frame = vtk.vtkMatrix4x4()
    node.GetMeasurementFrameMatrix(frame)
    to_ras = _matrix_to_numpy(frame)[:3, :3]
    return DiffusionInfo(bvalues, gradients @ (_RAS_TO_LPS @ to_ras).T)


def new_output_node(scene, reference, name: str, dwi: bool | None = None):
    """A new node of the reference's class (or scalar) placed like the reference.

    Diffusion-weighted outputs get the reference's gradients, b-values and measurement frame.
    """
    dwi = reference.IsA(DWI_CLASS) if dwi is None else dwi
    node = scene.AddNewNodeByClass(DWI_CLASS if dwi else "vtkMRMLScalarVolumeNode", name)
    copy_placement(reference, node)
    node.CreateDefaultDisplayNodes()
    return node


def copy_placement(reference, node) -> None:
    """Copy the IJK-to-RAS matrix and, between diffusion nodes, the diffusion table."""
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    if reference.IsA(DWI_CLASS) and node.IsA(DWI_CLASS):
        gradients = vtk.vtkDoubleArray()
        gradients.DeepCopy(reference.GetDiffusionGradients())
        bvalues = vtk.vtkDoubleArray()
        bvalues.DeepCopy(reference.GetBValues())
        node.SetNumberOfGradients(reference.GetNumberOfGradients())
        node.SetDiffusionGradients(gradients)
        node.SetBValues(bvalues)
        frame = vtk.vtkMatrix4x4()
        reference.GetMeasurementFrameMatrix(frame)
        node.SetMeasurementFrameMatrix(frame)


def update_node_from_volume(node, volume: Volume, reference) -> None:
    """Fill ``node`` with the volume's voxels, placed exactly like ``reference``."""
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array, dtype=np.float32))
    copy_placement(reference, node)


def add_node_from_volume(scene, volume: Volume, name: str):
    """A new node holding ``volume`` (scalar, or diffusion-weighted when it has a table)."""
    table = volume.diffusion if volume.is_series else None
    node = scene.AddNewNodeByClass(DWI_CLASS if table is not None else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(ijk_to_ras_from_geometry(volume.geometry))
    if table is not None:
        count = table.bvalues.size
        node.SetNumberOfGradients(count)
        ras = table.gradients @ _RAS_TO_LPS.T
        for index in range(count):
            node.SetDiffusionGradient(index, [float(v) for v in ras[index]])
            node.SetBValue(index, float(table.bvalues[index]))
        node.SetMeasurementFrameMatrix(_numpy_to_matrix(np.eye(4)))
    node.CreateDefaultDisplayNodes()
    return node
