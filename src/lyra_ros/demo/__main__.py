"""``python -m lyra_ros.demo``: the ROS demo launcher (:func:`lyra_ros.demo.demo.main`)."""

from lyra_ros.demo.demo import main

raise SystemExit(main())
