//go:build !race

package notifier_test

// raceDetector is true when the race detector is on: long tests scale down.
const raceDetector = false
