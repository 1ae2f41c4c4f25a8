/* div-zero: integer division by zero -> #DE. volatile keeps the compiler from folding it. */
#include <stdio.h>
int main(void)
{
    volatile int a = 42, b = 0;
    printf("about to divide by zero\n");
    fflush(stdout);
    volatile int c = a / b;
    return c;
}
