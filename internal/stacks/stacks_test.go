package stacks

import (
	"runtime"
	"sync"
	"testing"
)

func parkOnMutex(mu *sync.Mutex, done chan struct{}) {
	defer close(done)
	mu.Lock()
	mu.Unlock() //nolint:staticcheck // an empty critical section: the goroutine only waits
}

func TestParked(t *testing.T) {
	var mu sync.Mutex
	mu.Lock()
	done := make(chan struct{})
	go parkOnMutex(&mu, done)
	for !Parked([]string{Mutex, "stacks.parkOnMutex"}, nil) {
		runtime.Gosched()
	}
	if Parked([]string{Mutex, "stacks.parkOnMutex"}, []string{"stacks.parkOnMutex"}) {
		t.Fatal("Parked matched a stack that contains a string of without")
	}
	if Parked([]string{"stacks.noSuchFunction"}, nil) {
		t.Fatal("Parked matched a function that no goroutine runs")
	}
	mu.Unlock()
	<-done
}
