package stacks

import (
	"runtime"
	"sync"
	"testing"
)

func parkOnWaitGroup(wg *sync.WaitGroup, done chan struct{}) {
	defer close(done)
	wg.Wait()
}

func TestParked(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	done := make(chan struct{})
	go parkOnWaitGroup(&wg, done)
	for !Parked([]string{"sync.(*WaitGroup).Wait", "stacks.parkOnWaitGroup"}, nil) {
		runtime.Gosched()
	}
	if Parked([]string{"sync.(*WaitGroup).Wait", "stacks.parkOnWaitGroup"}, []string{"stacks.parkOnWaitGroup"}) {
		t.Fatal("Parked matched a stack that contains a string of without")
	}
	if Parked([]string{"stacks.noSuchFunction"}, nil) {
		t.Fatal("Parked matched a function that no goroutine runs")
	}
	wg.Done()
	<-done
}
