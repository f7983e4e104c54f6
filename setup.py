"""pip install of ask_expert_ros for ROS-free use (colcon builds with CMakeLists.txt)."""

from setuptools import find_packages, setup

setup(
    name='ask_expert_ros',
    version='0.1.0',
    description='Edge/near-edge ViT co-inference (Ask the Expert) as a ROS 2 package',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=[
        *find_packages(include=['ask_expert_ros', 'ask_expert_ros.*']),
        'ask_expert_ros.config',
    ],
    # config/ sits at the package root (ROS layout); ship it inside the wheel too
    package_dir={'ask_expert_ros.config': 'config'},
    package_data={
        'ask_expert_ros': ['py.typed'],
        'ask_expert_ros.config': ['*.yaml', 'devices/*.yaml', 'security/*.xml'],
    },
    install_requires=[
        'numpy>=1.24',
        'pyyaml>=6',
        'torch>=2.1',
        'timm>=1.0',
        'safetensors>=0.4',
        'scikit-learn>=1.3',
        'tqdm>=4.66',
        'opencv-python-headless>=4.8',
        'cyclonedds>=11,<12',
        'rosbags>=0.11',
        'matplotlib>=3.7',
    ],
    extras_require={
        # an extra, not a hard dependency: on a Jetson the GPU build of onnxruntime
        # (Jetson Zoo / onnxruntime-gpu) provides the same module and must not be
        # shadowed by the CPU wheel
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18'],
        # coverage-guided fuzzing (python -m ask_expert_ros.bench.fuzz --atheris ...)
        'fuzz': ['atheris>=2.3'],
        # the expert library served by Ray Serve (expert node parameter serving: ray)
        'fleet': ['ray[serve]>=2.40'],
        'test': [
            'ask_expert_ros[onnx]',
            'ask_expert_ros[fleet]',
            'pytest>=8',
            'pytest-timeout>=2.3',
            'hypothesis>=6.100',
            'catkin_pkg>=1.0',
            'rosbags>=0.10',
            'ruff>=0.6',
            'mypy>=1.10',
            'types-PyYAML',
        ],
    },
    entry_points={'console_scripts': ['ask-expert = ask_expert_ros.cli:main']},
)
